//! Unit tests of the client's checks and records.

use super::*;

#[test]
fn validation_mirrors_the_server() {
    let models = vec!["todo".to_owned()];
    let ok = |m: &str, c: Change| validate(m, &c, Some(&models), 262_144);
    assert!(ok("todo", Change::insert("1", json!({"id": "1"}))).is_ok());
    assert!(ok("todo", Change::insert("1", json!({"id": 1}))).is_ok());
    assert!(ok("todo", Change::delete("1")).is_ok());
    assert_eq!(
        ok("note", Change::delete("1")).unwrap_err().code(),
        "SYNC:UNKNOWN_MODEL"
    );
    for bad in [
        ok("to do", Change::delete("1")),
        ok("todo", Change::delete("")),
        ok("todo", Change::delete("a\nb")),
        ok("todo", Change::insert("1", json!([1]))),
        ok("todo", Change::update("1", json!({}))),
        ok("todo", Change::insert("1", json!({"id": "2"}))),
    ] {
        assert_eq!(bad.unwrap_err().code(), "SYNC:INVALID_CHANGE");
    }
    let mut deep = json!(1);
    for _ in 0..40 {
        deep = json!({ "a": deep });
    }
    assert_eq!(
        ok("todo", Change::update("1", deep)).unwrap_err().code(),
        "SYNC:PAYLOAD_TOO_DEEP"
    );
    let big = json!({ "text": "x".repeat(300_000) });
    assert_eq!(
        ok("todo", Change::update("1", big)).unwrap_err().code(),
        "SYNC:CHANGE_TOO_LARGE"
    );
}

#[test]
fn rejected_round_trips_through_json() {
    let r = Rejected {
        change: WireChange {
            op_id: "a".into(),
            model: "todo".into(),
            pk: "1".into(),
            op: Op::Insert,
            payload: json!({"id": "1"}),
            updated_at: "2026-11-25T10:00:00.000Z-0000".into(),
            actor: "me".into(),
        },
        error: ClientError::new("SYNC:FORBIDDEN", "no")
            .with_status(403)
            .with_meta(json!({"index": 0})),
        at_ms: 5,
    };
    assert_eq!(Rejected::from_json(&r.to_json()), Some(r));
}
