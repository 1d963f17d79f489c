//! Path, query-string and body parsing shared by the routes.

use std::collections::BTreeMap;

use imbtrack_barcode::Barcode;
use imbtrack_feed::time::parse_date;

use super::error::ApiError;

pub(super) fn parse_barcode(text: &str) -> Result<Barcode, ApiError> {
    Barcode::parse(text).map_err(|e| {
        ApiError::bad_request("bad_barcode", format!("{text:?} is not a barcode: {e}"))
    })
}

pub(super) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(
            "bad_body",
            format!("the body is not the expected JSON: {e}"),
        )
    })
}

/// The query string's parameters; unknown ones are refused so a typo is not silently ignored.
pub(super) fn query_params(
    query: Option<&str>,
    known: &[&str],
) -> Result<BTreeMap<String, String>, ApiError> {
    let mut params = BTreeMap::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !known.contains(&name) {
            return Err(ApiError::bad_request(
                "bad_query",
                format!("unknown parameter {name:?}; known: {}", known.join(", ")),
            ));
        }
        params.insert(name.to_string(), value.to_string());
    }
    Ok(params)
}

/// The `date` parameter (`YYYY-MM-DD`) as days since the epoch, with its text.
pub(super) fn parse_day(params: &BTreeMap<String, String>) -> Result<(i64, String), ApiError> {
    let text = params
        .get("date")
        .ok_or_else(|| ApiError::bad_request("bad_query", "date=YYYY-MM-DD is required"))?;
    let day = parse_date(text).ok_or_else(|| {
        ApiError::bad_request(
            "bad_query",
            format!("date {text:?} is not an existing day as YYYY-MM-DD"),
        )
    })?;
    Ok((day, text.clone()))
}

pub(super) fn parse_count(
    params: &BTreeMap<String, String>,
    name: &str,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    match params.get(name) {
        None => Ok(default),
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_request(
                "bad_query",
                format!("{name} {text:?} must be a whole number from 1 to {max}"),
            )),
        },
    }
}

/// Cursor of a page: the last key returned, as hex.
pub(super) fn parse_cursor(params: &BTreeMap<String, String>) -> Result<Option<u128>, ApiError> {
    params
        .get("cursor")
        .map(|text| {
            u128::from_str_radix(text, 16).map_err(|_| {
                ApiError::bad_request(
                    "bad_query",
                    format!("cursor {text:?} is not one this server gave"),
                )
            })
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_are_checked() {
        let params = query_params(
            Some("date=2025-01-11&limit=5&cursor=ff"),
            &["date", "limit", "cursor"],
        )
        .unwrap();
        assert_eq!(parse_day(&params).unwrap().1, "2025-01-11");
        assert_eq!(parse_count(&params, "limit", 100, 1000).unwrap(), 5);
        assert_eq!(parse_cursor(&params).unwrap(), Some(255));
        assert!(query_params(Some("dat=1"), &["date"]).is_err());
        let bad = |q: &str| query_params(Some(q), &["date", "limit", "cursor"]).unwrap();
        assert!(parse_day(&bad("")).is_err());
        assert!(parse_day(&bad("date=2025-02-30")).is_err());
        assert!(parse_count(&bad("limit=0"), "limit", 100, 1000).is_err());
        assert!(parse_count(&bad("limit=1001"), "limit", 100, 1000).is_err());
        assert!(parse_cursor(&bad("cursor=xyz")).is_err());
    }
}
