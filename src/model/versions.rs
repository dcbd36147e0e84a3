//! Schema versions: each model's current version, the upgrades that bring
//! an older client's payloads to it, and the check of the versions a client
//! announces (`X-Sync-Versions: todo=2,list=1`, or `versions=` on the
//! WebSocket URL).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::error::{ErrorCode, SyncError};
use better_sync_core::protocol::{Op, is_valid_model_name};

/// The header a client announces its model versions in.
pub(crate) const VERSIONS_HEADER: &str = "x-sync-versions";

/// Most models one announcement may name.
const MAX_ANNOUNCED: usize = 256;

/// An upgrade of a payload from one version of a model to the next: gets
/// the change's op and payload (the whole row of an insert, the changed
/// fields of an update) and returns it in the next version's form, or says
/// why it cannot.
pub type UpgradeFn =
    dyn Fn(Op, Map<String, Value>) -> Result<Map<String, Value>, String> + Send + Sync;

/// One model's version and its upgrades, keyed by the version they start from.
#[derive(Clone)]
pub(crate) struct VersionedModel {
    pub(crate) current: u32,
    pub(crate) upgrades: BTreeMap<u32, Arc<UpgradeFn>>,
}

impl VersionedModel {
    /// The oldest version whose payloads upgrade to the current one.
    pub(crate) fn oldest(&self) -> u32 {
        let mut v = self.current;
        while v > 1 && self.upgrades.contains_key(&(v - 1)) {
            v -= 1;
        }
        v
    }
}

/// The versions of every model, as `sync.json` shows them and requests are
/// checked against.
#[derive(Clone, Default)]
pub(crate) struct ModelVersions(BTreeMap<String, VersionedModel>);

/// The largest version a client may announce (nine digits: what
/// `openapi.json`'s pattern says).
const MAX_VERSION: u32 = 999_999_999;

/// What a client announced it was built for: model -> version. Models it
/// does not name are taken to be current.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ClientVersions(BTreeMap<String, u32>);

impl ClientVersions {
    /// Parse `todo=2,list=1` (spaces allowed around items); `None` or an
    /// empty text announces nothing.
    pub(crate) fn parse(text: Option<&str>) -> Result<Self, SyncError> {
        let mut out = BTreeMap::new();
        let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
            return Ok(Self(out));
        };
        let bad = |why: String| {
            SyncError::new(
                ErrorCode::InvalidQuery,
                format!(
                    "model versions ({VERSIONS_HEADER} / versions=): {why}; expected e.g. todo=2,list=1"
                ),
            )
        };
        for item in text.split(',') {
            let (model, version) = item
                .trim()
                .split_once('=')
                .ok_or_else(|| bad(format!("{item:?} has no `=`")))?;
            let (model, version) = (model.trim(), version.trim());
            if !is_valid_model_name(model) {
                return Err(bad(format!("{model:?} is not a model name")));
            }
            let version: u32 = version
                .parse()
                .ok()
                .filter(|v| (1..=MAX_VERSION).contains(v))
                .ok_or_else(|| bad(format!("{version:?} is not a version (1 to {MAX_VERSION})")))?;
            if out.insert(model.to_owned(), version).is_some() {
                return Err(bad(format!("{model} is named twice")));
            }
            if out.len() > MAX_ANNOUNCED {
                return Err(bad(format!("more than {MAX_ANNOUNCED} models")));
            }
        }
        Ok(Self(out))
    }
}

impl ModelVersions {
    pub(crate) fn insert(&mut self, model: String, versioned: VersionedModel) {
        self.0.insert(model, versioned);
    }

    /// The current version of `model` (1 when it declares none).
    pub(crate) fn current(&self, model: &str) -> u32 {
        self.0.get(model).map_or(1, |m| m.current)
    }

    /// Check a client's announcement: every model it names must be one this
    /// server can serve at that version (its current one, or an older one
    /// with upgrades all the way). Models the server does not know are left
    /// to the push's own check.
    pub(crate) fn admit(
        &self,
        client: &ClientVersions,
        known: impl Fn(&str) -> bool,
    ) -> Result<(), SyncError> {
        for (model, &version) in &client.0 {
            if !known(model) {
                continue;
            }
            let current = self.current(model);
            let oldest = self.0.get(model).map_or(1, VersionedModel::oldest);
            if version > current {
                return Err(unsupported(
                    model,
                    version,
                    current,
                    oldest,
                    "the client is newer than this server",
                ));
            }
            if version < oldest {
                return Err(unsupported(
                    model,
                    version,
                    current,
                    oldest,
                    "the client is older than this server can upgrade",
                ));
            }
        }
        Ok(())
    }

    /// Bring a payload a client sent at its announced version of `model` to
    /// the current version; `Err` is the reason an upgrade gave.
    pub(crate) fn upgrade(
        &self,
        client: &ClientVersions,
        model: &str,
        op: Op,
        payload: &mut Value,
    ) -> Result<(), String> {
        let (Some(&from), Some(m)) = (client.0.get(model), self.0.get(model)) else {
            return Ok(());
        };
        if from >= m.current || op == Op::Delete {
            return Ok(());
        }
        let Value::Object(fields) = payload else {
            return Ok(());
        };
        let mut fields = std::mem::take(fields);
        for v in from..m.current {
            let step = m
                .upgrades
                .get(&v)
                .ok_or_else(|| format!("no upgrade from version {v}"))?;
            fields = step(op, fields).map_err(|e| format!("upgrade from version {v}: {e}"))?;
        }
        *payload = Value::Object(fields);
        Ok(())
    }

    /// `sync.json`'s `versions`: per model with a version, its current and
    /// oldest served version (`None` when every model is at version 1
    /// without upgrades).
    pub(crate) fn document(&self) -> Option<Value> {
        (!self.0.is_empty()).then(|| {
            Value::Object(
                self.0
                    .iter()
                    .map(|(name, m)| {
                        (
                            name.clone(),
                            serde_json::json!({ "current": m.current, "oldest": m.oldest() }),
                        )
                    })
                    .collect(),
            )
        })
    }
}

fn unsupported(model: &str, version: u32, current: u32, oldest: u32, why: &str) -> SyncError {
    SyncError::new(
        ErrorCode::VersionUnsupported,
        format!(
            "model {model} version {version} cannot be served: {why} (it serves versions {oldest} to {current})"
        ),
    )
    .with_meta(serde_json::json!({
        "model": model,
        "version": version,
        "current": current,
        "oldest": oldest,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn todo_v3() -> ModelVersions {
        let mut upgrades: BTreeMap<u32, Arc<UpgradeFn>> = BTreeMap::new();
        // v2 renamed `name` to `title`.
        upgrades.insert(
            2,
            Arc::new(|_, mut f: Map<String, Value>| {
                if let Some(n) = f.remove("name") {
                    f.insert("title".into(), n);
                }
                Ok(f)
            }),
        );
        let mut m = ModelVersions::default();
        m.insert(
            "todo".into(),
            VersionedModel {
                current: 3,
                upgrades,
            },
        );
        m
    }

    #[test]
    fn announcements_parse_or_say_why_not() {
        let v = ClientVersions::parse(Some(" todo=2, list=1 ")).expect("parse");
        assert_eq!(v.0.get("todo"), Some(&2));
        assert_eq!(
            ClientVersions::parse(None).expect("none"),
            ClientVersions::default()
        );
        assert_eq!(
            ClientVersions::parse(Some("")).expect("empty"),
            ClientVersions::default()
        );
        for bad in [
            "todo",
            "todo=0",
            "todo=x",
            "to do=1",
            "todo=1,todo=2",
            "todo=-1",
            "=1",
        ] {
            let e = ClientVersions::parse(Some(bad)).expect_err(bad);
            assert_eq!(e.code(), ErrorCode::InvalidQuery, "{bad}");
        }
    }

    #[test]
    fn versions_are_admitted_between_the_oldest_upgradable_and_the_current() {
        let m = todo_v3();
        let known = |_: &str| true;
        assert!(
            m.admit(&ClientVersions::parse(Some("todo=3")).expect("v"), known)
                .is_ok()
        );
        assert!(
            m.admit(&ClientVersions::parse(Some("todo=2")).expect("v"), known)
                .is_ok()
        );
        let old = m
            .admit(&ClientVersions::parse(Some("todo=1")).expect("v"), known)
            .expect_err("no upgrade from 1");
        assert_eq!(old.code(), ErrorCode::VersionUnsupported);
        let new = m
            .admit(&ClientVersions::parse(Some("todo=4")).expect("v"), known)
            .expect_err("newer");
        assert!(new.to_string().contains("newer"), "{new}");
        // A model without a version is at 1.
        assert!(
            m.admit(&ClientVersions::parse(Some("note=2")).expect("v"), known)
                .is_err()
        );
        assert!(
            m.admit(&ClientVersions::parse(Some("note=1")).expect("v"), known)
                .is_ok()
        );
        assert!(
            m.admit(&ClientVersions::parse(Some("gone=9")).expect("v"), |_| {
                false
            })
            .is_ok()
        );
    }

    #[test]
    fn payloads_are_upgraded_step_by_step() {
        let m = todo_v3();
        let client = ClientVersions::parse(Some("todo=2")).expect("v");
        let mut p = json!({"name": "milk"});
        m.upgrade(&client, "todo", Op::Update, &mut p)
            .expect("upgrade");
        assert_eq!(p, json!({"title": "milk"}));
        let current = ClientVersions::default();
        let mut p = json!({"name": "milk"});
        m.upgrade(&current, "todo", Op::Update, &mut p)
            .expect("none");
        assert_eq!(p, json!({"name": "milk"}));
    }
}
