//! The report catalog: which reports exist, which discovery route lists
//! each (and so whether it is tenant-wide or per-queue), and whether it is
//! StartOnly. Report names match case-insensitively and are forwarded in
//! their canonical spelling; a name the catalog does not know is refused
//! with 404 `unknown_report` and nothing is forwarded. The catalog starts
//! from configuration and is refreshed from Chime's discovery routes
//! ([`refresh`]); a failed refresh keeps the last good catalog.

pub mod refresh;

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};

/// The discovery route that lists a report, which also fixes its scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Tenant-wide (`Report/GetAvailableGlobalReports`); admin only.
    Global,
    /// `Report/GetQueueBasicReports`.
    QueueBasic,
    /// `Report/GetQueueAgentReports`.
    QueueAgent,
    /// `Report/GetQueuePerformanceReports`.
    QueuePerformance,
    /// `Report/GetQueueTextAnalyticsReports`.
    QueueTextAnalytics,
    /// `Report/GetQueueBotReports`.
    QueueBot,
}

impl Category {
    /// Every category, in discovery-route order.
    pub const ALL: [Category; 6] = [
        Category::Global,
        Category::QueueBasic,
        Category::QueueAgent,
        Category::QueuePerformance,
        Category::QueueTextAnalytics,
        Category::QueueBot,
    ];

    /// The discovery route's name under `Report/`.
    pub fn discovery_route(self) -> &'static str {
        match self {
            Category::Global => "GetAvailableGlobalReports",
            Category::QueueBasic => "GetQueueBasicReports",
            Category::QueueAgent => "GetQueueAgentReports",
            Category::QueuePerformance => "GetQueuePerformanceReports",
            Category::QueueTextAnalytics => "GetQueueTextAnalyticsReports",
            Category::QueueBot => "GetQueueBotReports",
        }
    }

    /// The category whose discovery route is `name` (case-insensitive).
    pub fn from_discovery_route(name: &str) -> Option<Category> {
        Category::ALL
            .into_iter()
            .find(|c| c.discovery_route().eq_ignore_ascii_case(name))
    }

    /// Whether reports of this category take a `queueId`.
    pub fn is_per_queue(self) -> bool {
        self != Category::Global
    }

    /// Chime's own label for the category.
    pub fn label(self) -> &'static str {
        match self {
            Category::Global => "Global",
            Category::QueueBasic => "Basic",
            Category::QueueAgent => "Agent",
            Category::QueuePerformance => "Performance",
            Category::QueueTextAnalytics => "Text Analytics",
            Category::QueueBot => "Bot",
        }
    }
}

/// One report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportDef {
    /// Canonical name, the last segment of its route (`InboundVsAnsweredChats`).
    pub name: String,
    /// Title shown in Chime.
    #[serde(default)]
    pub title: String,
    /// Which discovery route lists it.
    pub category: Category,
    /// Covers one day and takes only `start`.
    #[serde(default)]
    pub start_only: bool,
    /// Chime's chart type for the JSON form.
    #[serde(default = "default_chart")]
    pub chart_type: String,
}

fn default_chart() -> String {
    "Table".to_owned()
}

/// A report name the catalog does not know.
#[derive(Debug, thiserror::Error)]
#[error("there is no report named `{name}`; GET /Chime/Report/GetQueueBasicReports and the other discovery routes list the reports you may call")]
pub struct UnknownReport {
    /// The name as requested (already checked to be alphanumeric).
    pub name: String,
}

/// Whether `name` has the shape of a report name: ASCII letters and digits.
pub fn is_report_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 100 && name.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Checks a configured report list.
pub fn validate(reports: &[ReportDef]) -> Result<(), String> {
    let mut seen = HashMap::new();
    for r in reports {
        if !is_report_name(&r.name) {
            return Err(format!(
                "`{}` is not a report name (ASCII letters and digits)",
                r.name
            ));
        }
        if Category::from_discovery_route(&r.name).is_some() {
            return Err(format!("`{}` is a discovery route, not a report", r.name));
        }
        if let Some(prev) = seen.insert(r.name.to_ascii_lowercase(), &r.name) {
            return Err(format!("`{}` and `{prev}` differ only in case", r.name));
        }
    }
    Ok(())
}

/// Looks `name` up in a map keyed by lower-cased report names (the catalog's
/// own, and the per-report settings of `[request]` and `[ratelimit]`),
/// ignoring ASCII case; names of ordinary length are lower-cased on the
/// stack, not in a new `String` for every request.
pub fn by_report_name<'m, V, S: std::hash::BuildHasher>(
    map: &'m HashMap<String, V, S>,
    name: &str,
) -> Option<&'m V> {
    // Per-report settings are usually empty: then there is nothing to fold.
    if map.is_empty() {
        return None;
    }
    let mut buf = [0u8; 128];
    let Some(lower) = buf.get_mut(..name.len()) else {
        return map.get(&name.to_ascii_lowercase());
    };
    lower.copy_from_slice(name.as_bytes());
    lower.make_ascii_lowercase();
    // ASCII lower-casing keeps UTF-8 valid.
    map.get(std::str::from_utf8(lower).ok()?)
}

/// The reports, indexed by lower-cased name.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// Read-only once built, so a fast hasher is safe with client-chosen
    /// lookups (flooding needs inserts).
    by_name: HashMap<String, Arc<ReportDef>, foldhash::fast::RandomState>,
    ordered: Vec<Arc<ReportDef>>,
}

impl Catalog {
    /// Builds a catalog from validated definitions.
    pub fn new(reports: &[ReportDef]) -> Self {
        let ordered: Vec<_> = reports.iter().cloned().map(Arc::new).collect();
        let by_name = ordered
            .iter()
            .map(|r| (r.name.to_ascii_lowercase(), Arc::clone(r)))
            .collect();
        Catalog { by_name, ordered }
    }

    /// Finds a report by name, ignoring ASCII case.
    pub fn find(&self, name: &str) -> Result<Arc<ReportDef>, UnknownReport> {
        by_report_name(&self.by_name, name)
            .cloned()
            .ok_or_else(|| UnknownReport {
                name: name.to_owned(),
            })
    }

    /// All reports, in configuration order.
    pub fn reports(&self) -> &[Arc<ReportDef>] {
        &self.ordered
    }

    /// How many reports are known.
    pub fn len(&self) -> usize {
        self.ordered.len()
    }

    /// Whether the catalog is empty.
    pub fn is_empty(&self) -> bool {
        self.ordered.is_empty()
    }
}

/// The catalog in force, swapped atomically when a refresh succeeds.
#[derive(Debug)]
pub struct CatalogHandle(ArcSwap<Catalog>);

impl CatalogHandle {
    /// Starts with `catalog`.
    pub fn new(catalog: Catalog) -> Self {
        CatalogHandle(ArcSwap::from_pointee(catalog))
    }

    /// The catalog now.
    pub fn current(&self) -> Arc<Catalog> {
        self.0.load_full()
    }

    /// Replaces the catalog.
    pub fn replace(&self, catalog: Catalog) {
        self.0.store(Arc::new(catalog));
    }
}

/// The reports of a stock Chime install; the default catalog and the
/// simulator's report set.
pub fn builtin() -> Vec<ReportDef> {
    use Category::*;
    let r = |name: &str, title: &str, category, chart: &str, start_only| ReportDef {
        name: name.to_owned(),
        title: title.to_owned(),
        category,
        start_only,
        chart_type: chart.to_owned(),
    };
    vec![
        r(
            "GlobalChatVolume",
            "Chat volume across all queues",
            Global,
            "Line",
            false,
        ),
        r(
            "GlobalAgentUtilization",
            "Agent utilization across all queues",
            Global,
            "Bar",
            false,
        ),
        r(
            "QueueComparison",
            "Queue comparison",
            Global,
            "Table",
            false,
        ),
        r(
            "InboundVsAnsweredChats",
            "Inbound vs. answered chats",
            QueueBasic,
            "Line",
            false,
        ),
        r(
            "ChatsByHourOfDay",
            "Chats by hour of day",
            QueueBasic,
            "Bar",
            false,
        ),
        r(
            "AbandonedChats",
            "Abandoned chats",
            QueueBasic,
            "Table",
            false,
        ),
        r("ChatDuration", "Chat duration", QueueBasic, "Bar", false),
        r(
            "AgentChatCounts",
            "Chats per agent",
            QueueAgent,
            "Bar",
            false,
        ),
        r(
            "AgentAvailability",
            "Agent availability for one day",
            QueueAgent,
            "Table",
            true,
        ),
        r(
            "AverageSpeedToAnswer",
            "Average speed to answer",
            QueuePerformance,
            "Line",
            false,
        ),
        r(
            "ServiceLevel",
            "Service level",
            QueuePerformance,
            "Line",
            false,
        ),
        r(
            "SentimentByDay",
            "Sentiment by day",
            QueueTextAnalytics,
            "Line",
            false,
        ),
        r(
            "KeywordFrequency",
            "Keyword frequency",
            QueueTextAnalytics,
            "Table",
            false,
        ),
        r(
            "BotChatDetails",
            "Bot chat details",
            QueueBot,
            "Table",
            false,
        ),
        r(
            "BotDeflectionRate",
            "Bot deflection rate",
            QueueBot,
            "Line",
            false,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_names_are_looked_up_ignoring_case_at_any_length() {
        let long = "Inbound".repeat(40);
        let map = HashMap::from([
            ("inboundvsansweredchats".to_owned(), 1),
            (long.to_ascii_lowercase(), 2),
        ]);
        assert_eq!(by_report_name(&map, "InboundVsAnsweredChats"), Some(&1));
        assert_eq!(
            by_report_name(&map, &long),
            Some(&2),
            "longer than the stack buffer"
        );
        assert_eq!(by_report_name(&map, "InboundVsAnswered"), None);
        assert_eq!(
            by_report_name(&map, "ınboundvsansweredchats"),
            None,
            "ASCII case only"
        );
    }

    #[test]
    fn builtin_is_valid_and_covers_every_category() {
        let reports = builtin();
        validate(&reports).unwrap();
        for c in Category::ALL {
            assert!(reports.iter().any(|r| r.category == c), "{c:?}");
        }
        assert!(reports.iter().any(|r| r.start_only));
    }

    #[test]
    fn lookup_ignores_case_and_returns_canonical_name() {
        let cat = Catalog::new(&builtin());
        assert_eq!(
            cat.find("inboundvsansweredchats").unwrap().name,
            "InboundVsAnsweredChats"
        );
        assert_eq!(
            cat.find("INBOUNDVSANSWEREDCHATS").unwrap().name,
            "InboundVsAnsweredChats"
        );
        assert!(cat.find("NoSuchReport").is_err());
    }

    #[test]
    fn discovery_routes_round_trip() {
        for c in Category::ALL {
            assert_eq!(Category::from_discovery_route(c.discovery_route()), Some(c));
            assert_eq!(
                Category::from_discovery_route(&c.discovery_route().to_uppercase()),
                Some(c)
            );
        }
        assert_eq!(Category::from_discovery_route("GetEverything"), None);
    }

    #[test]
    fn validate_rejects_bad_lists() {
        let mut reports = builtin();
        reports.push(ReportDef {
            name: "inboundvsansweredchats".into(),
            ..reports[3].clone()
        });
        assert!(validate(&reports)
            .unwrap_err()
            .contains("differ only in case"));
        let bad = vec![ReportDef {
            name: "GetQueueBotReports".into(),
            ..builtin()[0].clone()
        }];
        assert!(validate(&bad).is_err());
    }
}
