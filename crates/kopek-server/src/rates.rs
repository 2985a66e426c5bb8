//! `kopek rates set|import|list`: exchange rates on a running server, over its HTTP API
//! (`/v1/fx/rates`). Setting and importing need an admin key.

use crate::cli::{RatesArgs, RatesCommand, RatesImportArgs, RatesSetArgs};
use serde_json::{Value, json};
use std::process::ExitCode;
use std::time::Duration;

/// Rates per import request: the server takes at most 1,024 at a time.
const IMPORT_CHUNK: usize = 1_000;

pub async fn run(command: RatesCommand) -> ExitCode {
    let result = match command {
        RatesCommand::Set(args) => set(args).await,
        RatesCommand::Import(args) => import(args).await,
        RatesCommand::List(args) => list(args).await,
    };
    match result {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

struct Api {
    client: reqwest::Client,
    base: String,
    key: Option<String>,
}

impl Api {
    fn new(args: &RatesArgs) -> Result<Api, String> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|error| format!("an HTTP client: {error}"))?;
        Ok(Api {
            client,
            base: args.addr.trim_end_matches('/').to_owned(),
            key: args.api_key.clone(),
        })
    }

    /// Sends a request; answers the status and the JSON body.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(u16, Value), String> {
        let url = format!("{}{path}", self.base);
        let mut request = self.client.request(method.clone(), &url);
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.to_string());
        }
        let response = request
            .send()
            .await
            .map_err(|error| format!("{method} {url}: {}", error.without_url()))?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(|error| format!("{method} {url}: {error}"))?;
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, value))
    }
}

/// The sentence of an error body, or the body.
fn error_text(status: u16, body: &Value) -> String {
    match body.pointer("/error/code").and_then(Value::as_str) {
        Some(code) => format!(
            "{code}: {}",
            body.pointer("/error/message").and_then(Value::as_str).unwrap_or_default()
        ),
        None => format!("HTTP {status}: {body}"),
    }
}

fn rate_line(rate: &Value) -> String {
    let text = |field: &str| rate.get(field).and_then(Value::as_str).unwrap_or_default();
    format!(
        "{}/{} {} (source {}, valid from {})",
        text("base"),
        text("quote"),
        text("rate"),
        text("source"),
        text("valid_from")
    )
}

async fn set(args: RatesSetArgs) -> Result<ExitCode, String> {
    let api = Api::new(&args.api)?;
    let mut body = json!({ "rate": args.rate });
    if let Some(source) = &args.source {
        body["source"] = json!(source);
    }
    if let Some(valid_from) = &args.valid_from {
        body["valid_from"] = json!(valid_from);
    }
    let path = format!("/v1/fx/rates/{}/{}", args.base, args.quote);
    let (status, answer) = api.call(reqwest::Method::PUT, &path, Some(&body)).await?;
    if status != 200 {
        eprintln!("error: {}", error_text(status, &answer));
        return Ok(ExitCode::from(1));
    }
    if args.api.json {
        println!("{answer}");
    } else {
        let changed = answer.get("changed").and_then(Value::as_bool).unwrap_or(false);
        let rate = answer.get("rate").cloned().unwrap_or(Value::Null);
        println!("{}: {}", rate_line(&rate), if changed { "set" } else { "unchanged" });
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads rates from CSV (`base,quote,rate[,source[,valid_from]]`, a header line allowed) or
/// JSON (`{"rates": [...]}` or a list of `{base, quote, rate, source?, valid_from?}`).
fn read_rates(text: &str, source: Option<&str>) -> Result<Vec<Value>, String> {
    let trimmed = text.trim_start();
    let mut rates: Vec<Value> = if trimmed.starts_with('{') || trimmed.starts_with('[') {
        let value: Value =
            serde_json::from_str(text).map_err(|error| format!("not JSON: {error}"))?;
        let list = value.get("rates").cloned().unwrap_or(value);
        list.as_array().cloned().ok_or("JSON rates must be a list or {\"rates\": [...]}")?
    } else {
        let mut rates = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            if number == 0 && fields.first().is_some_and(|field| field.eq_ignore_ascii_case("base"))
            {
                continue;
            }
            if !(3..=5).contains(&fields.len()) {
                return Err(format!(
                    "line {}: expected base,quote,rate[,source[,valid_from]]",
                    number + 1
                ));
            }
            let mut rate = json!({ "base": fields[0], "quote": fields[1], "rate": fields[2] });
            if let Some(source) = fields.get(3).filter(|field| !field.is_empty()) {
                rate["source"] = json!(source);
            }
            if let Some(valid_from) = fields.get(4).filter(|field| !field.is_empty()) {
                rate["valid_from"] = json!(valid_from);
            }
            rates.push(rate);
        }
        rates
    };
    if let Some(source) = source {
        for rate in &mut rates {
            if rate.get("source").is_none() {
                rate["source"] = json!(source);
            }
        }
    }
    Ok(rates)
}

async fn import(args: RatesImportArgs) -> Result<ExitCode, String> {
    let text = std::fs::read_to_string(&args.file)
        .map_err(|error| format!("read {}: {error}", args.file.display()))?;
    let rates = read_rates(&text, args.source.as_deref())
        .map_err(|message| format!("{}: {message}", args.file.display()))?;
    if rates.is_empty() {
        return Err(format!("{}: no rates in it", args.file.display()));
    }
    let api = Api::new(&args.api)?;
    let (mut set, mut unchanged, mut failed) = (0, 0, 0);
    for chunk in rates.chunks(IMPORT_CHUNK) {
        let body = json!({ "rates": chunk });
        let (status, answer) = api.call(reqwest::Method::POST, "/v1/fx/rates", Some(&body)).await?;
        if status != 200 {
            eprintln!("error: {}", error_text(status, &answer));
            return Ok(ExitCode::from(1));
        }
        let results = answer.get("results").and_then(Value::as_array).cloned().unwrap_or_default();
        for (rate, result) in chunk.iter().zip(&results) {
            match result.get("error").filter(|error| !error.is_null()) {
                Some(error) => {
                    failed += 1;
                    eprintln!(
                        "refused {}/{} {}: {}",
                        rate.get("base").and_then(Value::as_str).unwrap_or_default(),
                        rate.get("quote").and_then(Value::as_str).unwrap_or_default(),
                        rate.get("rate").and_then(Value::as_str).unwrap_or_default(),
                        error_text(400, &json!({ "error": error }))
                    );
                }
                None if result.get("changed").and_then(Value::as_bool) == Some(true) => set += 1,
                None => unchanged += 1,
            }
        }
    }
    if args.api.json {
        println!("{}", json!({ "set": set, "unchanged": unchanged, "refused": failed }));
    } else {
        println!("{set} rates set, {unchanged} unchanged, {failed} refused");
    }
    Ok(ExitCode::from(if failed == 0 { 0 } else { 1 }))
}

async fn list(args: RatesArgs) -> Result<ExitCode, String> {
    let api = Api::new(&args)?;
    let (status, answer) = api.call(reqwest::Method::GET, "/v1/fx/rates", None).await?;
    if status != 200 {
        eprintln!("error: {}", error_text(status, &answer));
        return Ok(ExitCode::from(1));
    }
    if args.json {
        println!("{answer}");
        return Ok(ExitCode::SUCCESS);
    }
    let rates = answer.get("rates").and_then(Value::as_array).cloned().unwrap_or_default();
    let base = answer.get("base_currency").and_then(Value::as_str).unwrap_or_default();
    println!("{} rates in force (cross rates through {base})", rates.len());
    for rate in &rates {
        println!("  {}", rate_line(rate));
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_read_from_csv_and_json() {
        let csv = "base,quote,rate,source\nUSD,EUR,0.9234,ecb\n# a comment\n\nUSD,JPY,151.37\n";
        let rates = read_rates(csv, Some("file")).expect("csv");
        assert_eq!(rates.len(), 2);
        assert_eq!(rates[0]["source"], "ecb");
        assert_eq!(rates[1]["source"], "file");
        let json = r#"{"rates": [{"base": "EUR", "quote": "GBP", "rate": "0.85"}]}"#;
        assert_eq!(read_rates(json, None).expect("json")[0]["quote"], "GBP");
        assert!(read_rates("USD,EUR\n", None).is_err());
    }
}
