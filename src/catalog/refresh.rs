//! Refreshing the catalog from Chime's discovery routes.
//!
//! Each route answers a JSON array of `{Controller, Title, ChartType,
//! Category, StartOnly}`; the route that listed a report fixes its
//! category (and so its scope), whatever its `Category` text says. An
//! answer that does not parse, a name that is not a report name, or two
//! reports differing only in case reject the whole refresh: a partial
//! catalog is never installed.

use serde::Deserialize;

use super::{validate, Category, ReportDef};

/// Why a refresh was rejected.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// A discovery route could not be fetched.
    #[error("{route}: {source}")]
    Fetch {
        /// Which route.
        route: &'static str,
        /// What went wrong.
        source: crate::BoxError,
    },
    /// An answer is not what Chime sends.
    #[error("{route}: unexpected answer: {message}")]
    Invalid {
        /// Which route.
        route: &'static str,
        /// What is wrong.
        message: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Listed {
    controller: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    chart_type: Option<String>,
    #[serde(default)]
    start_only: bool,
}

/// Turns one discovery route's answer into report definitions.
pub fn parse_listing(
    category: Category,
    answer: &serde_json::Value,
) -> Result<Vec<ReportDef>, RefreshError> {
    let route = category.discovery_route();
    let invalid = |message: String| RefreshError::Invalid { route, message };
    let listed: Vec<Listed> =
        serde_json::from_value(answer.clone()).map_err(|e| invalid(e.to_string()))?;
    listed
        .into_iter()
        .map(|l| {
            let name = l
                .controller
                .strip_prefix("Report/")
                .filter(|n| super::is_report_name(n))
                .ok_or_else(|| {
                    invalid(format!("`{}` is not a Report/{{Name}} route", l.controller))
                })?;
            Ok(ReportDef {
                name: name.to_owned(),
                title: l.title,
                category,
                start_only: l.start_only,
                chart_type: l.chart_type.unwrap_or_else(|| "Table".to_owned()),
            })
        })
        .collect()
}

/// Assembles the six answers into a validated report list.
pub fn assemble(
    answers: Vec<(Category, serde_json::Value)>,
) -> Result<Vec<ReportDef>, RefreshError> {
    let mut reports = Vec::new();
    for (category, answer) in &answers {
        reports.extend(parse_listing(*category, answer)?);
    }
    validate(&reports).map_err(|message| RefreshError::Invalid {
        route: "discovery routes",
        message,
    })?;
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn listing_is_parsed_and_scoped_by_route() {
        let answer = json!([
            {"Controller": "Report/BotChatDetails", "Title": "Bot chats", "ChartType": "Table", "Category": "Global", "StartOnly": false},
            {"Controller": "Report/BotDay", "Title": "One day", "StartOnly": true},
        ]);
        let reports = parse_listing(Category::QueueBot, &answer).unwrap();
        assert_eq!(reports.len(), 2);
        assert_eq!(
            reports[0].category,
            Category::QueueBot,
            "the route decides, not the text"
        );
        assert!(reports[1].start_only);
        assert_eq!(reports[1].chart_type, "Table");
    }

    #[test]
    fn bad_answers_reject_the_refresh() {
        for bad in [
            json!({"Controller": "Report/X"}),
            json!([{"Controller": "Session/SessionDetails"}]),
            json!([{"Controller": "Report/../Admin"}]),
            json!([{"Title": "no controller"}]),
        ] {
            assert!(parse_listing(Category::QueueBasic, &bad).is_err(), "{bad}");
        }
        let dup = vec![
            (Category::QueueBasic, json!([{"Controller": "Report/Same"}])),
            (Category::Global, json!([{"Controller": "Report/SAME"}])),
        ];
        assert!(assemble(dup).is_err());
    }
}
