//! `chime-gateway demo` serves what it prints.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use chime_gateway::demo;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

fn curl_urls(text: &str) -> Vec<(String, Option<String>)> {
    text.lines()
        .filter(|l| l.trim_start().starts_with("curl "))
        .map(|l| {
            let url = l
                .split('\'')
                .nth(1)
                .map(str::to_owned)
                .unwrap_or_else(|| l.split_whitespace().last().unwrap().to_owned());
            let auth = l
                .split("Bearer ")
                .nth(1)
                .map(|k| k.trim_end_matches('\'').to_owned());
            (url, auth)
        })
        .collect()
}

#[tokio::test]
async fn printed_curl_commands_work() {
    let any = "127.0.0.1:0".parse().unwrap();
    let d = demo::start(any, any).await.unwrap();
    let text = demo::instructions(
        d.gateway.public_addr(),
        d.gateway.admin_addr(),
        &d.simulator.base_url(),
    );
    let urls = curl_urls(&text);
    assert_eq!(urls.len(), 3, "{text}");
    let _sim = d.simulator;
    tokio::spawn(d.gateway.run(std::future::pending()));

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut results = Vec::new();
    for (url, key) in urls {
        let mut req = Request::get(&url);
        if let Some(k) = key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        let resp = client
            .request(req.body(Empty::new()).unwrap())
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        results.push((status, String::from_utf8_lossy(&body).into_owned()));
    }
    assert_eq!(results[0].0, 200, "{}", results[0].1);
    assert!(results[0].1.starts_with("Date,QueueId,Inbound,Answered"));
    assert_eq!(results[1].0, 403);
    assert!(results[1].1.contains("queue_forbidden"));
    assert_eq!(results[2].0, 200);
    assert!(results[2].1.contains("chime_gateway_requests_total"));
    // The first command is Chime's documented example with only the host changed.
    assert!(text.contains(
        "/Chime/Report/InboundVsAnsweredChats?queueId=1&start=2020-11-01T04:00:00.000Z&stop=2020-12-01T04:59:59.999Z&csv=true' -H 'Authorization: Bearer b5c38d85-a042-4cef-8418-eb06752e346b'"
    ));
}
