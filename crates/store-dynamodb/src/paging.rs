//! Opaque page tokens: the query's `LastEvaluatedKey`, bound to the partition it came from so a
//! token of one org can never page through another's items.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use std::collections::BTreeMap;

use aws_sdk_dynamodb::types::AttributeValue;
use o365_domain::{DomainError, Result};

use crate::Item;

pub fn encode(last_key: Option<&Item>) -> Option<String> {
    let key = last_key?;
    let plain: BTreeMap<&str, &str> = key
        .iter()
        .filter_map(|(k, v)| v.as_s().ok().map(|v| (k.as_str(), v.as_str())))
        .collect();
    Some(URL_SAFE_NO_PAD.encode(serde_json::to_vec(&plain).ok()?))
}

/// The refusal of a page token that is not one of ours for this listing.
pub fn invalid_token() -> DomainError {
    DomainError::invalid(
        "after",
        "invalid_page_token",
        "the page token is not valid for this listing",
    )
}

/// Decodes a token, refusing one whose `partition_attribute` is not `partition`.
pub fn decode(
    token: Option<&str>,
    partition_attribute: &str,
    partition: &str,
) -> Result<Option<Item>> {
    let Some(token) = token else { return Ok(None) };
    let bad = invalid_token;
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let plain: BTreeMap<String, String> = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if plain.get(partition_attribute).map(String::as_str) != Some(partition) {
        return Err(bad());
    }
    Ok(Some(
        plain
            .into_iter()
            .map(|(k, v)| (k, AttributeValue::S(v)))
            .collect(),
    ))
}
