//! The shared conflict vectors (`conflict_vectors.json`, read by the browser
//! client's tests too): every arrival order of each case's changes, and
//! every merge order of its one-change replica states, end in the expected
//! state.

use better_sync_core::conflict::{RowState, Stamp};
use better_sync_core::protocol::Op;
use serde_json::Value;

const VECTORS: &str = include_str!("conflict_vectors.json");

/// Every ordering of `0..n`.
fn permutations(n: usize) -> Vec<Vec<usize>> {
    fn permute(items: &mut Vec<usize>, k: usize, out: &mut Vec<Vec<usize>>) {
        if k == items.len() {
            out.push(items.clone());
            return;
        }
        for i in k..items.len() {
            items.swap(k, i);
            permute(items, k + 1, out);
            items.swap(k, i);
        }
    }
    let mut out = Vec::new();
    permute(&mut (0..n).collect(), 0, &mut out);
    out
}

fn change(v: &Value) -> (Op, Value, Stamp) {
    let op = Op::parse(v[0].as_str().expect("op")).expect("known op");
    let stamp = &v[2];
    let stamp = Stamp::new(
        stamp[0].as_str().expect("clock").parse().expect("clock"),
        stamp[1].as_str().expect("actor"),
        stamp[2].as_str().expect("op id"),
    );
    (op, v[1].clone(), stamp)
}

#[test]
fn every_vector_converges_to_its_expected_state() {
    let vectors: Value = serde_json::from_str(VECTORS).expect("vectors are JSON");
    let cases = vectors["cases"].as_array().expect("cases");
    assert!(cases.len() >= 10);
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let changes: Vec<_> = case["changes"]
            .as_array()
            .expect("changes")
            .iter()
            .map(change)
            .collect();
        let mut whole: Option<RowState> = None;
        for order in permutations(changes.len()) {
            let mut s = RowState::default();
            for i in order {
                let (op, payload, stamp) = &changes[i];
                s.apply(*op, payload, stamp);
            }
            match &whole {
                None => whole = Some(s),
                Some(w) => assert_eq!(w, &s, "{name}: arrival order matters"),
            }
        }
        let whole = whole.expect("a case has changes");
        assert_eq!(whole.is_live(), case["live"] == true, "{name}: live");
        assert_eq!(whole.value(), case["value"], "{name}: value");
        if let Some(clocks) = case.get("clocks") {
            assert_eq!(&whole.clocks_json(), clocks, "{name}: clocks");
        }
        // Replicas holding one change each merge to the same state.
        let parts: Vec<RowState> = changes
            .iter()
            .map(|(op, payload, stamp)| {
                let mut s = RowState::default();
                s.apply(*op, payload, stamp);
                s
            })
            .collect();
        for order in permutations(parts.len()) {
            let mut s = RowState::default();
            for i in order {
                s.merge(&parts[i]);
            }
            assert_eq!(s, whole, "{name}: merge order matters");
        }
    }
}
