//! Query strings: each parameter at most once, typed accessors.

use std::time::Duration;

use crate::error::{ErrorCode, SyncError};

/// Query parameters, each allowed at most once.
pub(super) struct Query(Vec<(String, String)>);

impl Query {
    pub(super) fn parse(q: Option<&str>) -> Result<Self, SyncError> {
        let pairs: Vec<(String, String)> = form_urlencoded::parse(q.unwrap_or("").as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        for (i, (k, _)) in pairs.iter().enumerate() {
            if pairs[..i].iter().any(|(k2, _)| k2 == k) {
                return Err(SyncError::new(
                    ErrorCode::InvalidQuery,
                    format!("query parameter `{k}` is given more than once"),
                ));
            }
        }
        Ok(Self(pairs))
    }

    pub(super) fn text(&self, name: &str) -> Result<Option<String>, SyncError> {
        match self.0.iter().find(|(k, _)| k == name) {
            None => Ok(None),
            Some((_, v)) if v.is_empty() => Err(SyncError::new(
                ErrorCode::InvalidQuery,
                format!("query parameter `{name}` is empty"),
            )),
            Some((_, v)) => Ok(Some(v.clone())),
        }
    }

    pub(super) fn positive(&self, name: &str) -> Result<Option<u64>, SyncError> {
        self.text(name)?
            .map(|v| match v.parse::<u64>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(SyncError::new(
                    ErrorCode::InvalidQuery,
                    format!("query parameter `{name}` must be a positive integer, got {v:?}"),
                )),
            })
            .transpose()
    }

    pub(super) fn seconds(&self, name: &str) -> Result<Option<Duration>, SyncError> {
        self.text(name)?
            .map(|v| match v.parse::<f64>() {
                Ok(s) if (0.0..=86_400.0).contains(&s) => Ok(Duration::from_secs_f64(s)),
                _ => Err(SyncError::new(
                    ErrorCode::InvalidQuery,
                    format!("query parameter `{name}` must be a number of seconds, got {v:?}"),
                )),
            })
            .transpose()
    }
}
