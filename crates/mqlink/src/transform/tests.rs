use serde_json::json;

use super::jq::{MAX_JQ_LEN, MAX_JQ_NESTING, MAX_JQ_OPERATORS};
use super::*;

fn chain(steps: &[Transform]) -> Chain {
    Chain::new(steps)
}

fn p(code: &str) -> Program {
    Program::compile(code).unwrap()
}

#[test]
fn filter_keeps_records_where_the_expression_is_true() {
    let c = chain(&[Transform::Filter(p(".temp > 20"))]);
    assert_eq!(
        c.apply_json(&json!({"temp": 25})).unwrap(),
        [json!({"temp": 25})]
    );
    assert!(c.apply_json(&json!({"temp": 15})).unwrap().is_empty());
}

#[test]
fn filter_with_no_output_drops_the_record() {
    let c = chain(&[Transform::Filter(p("empty"))]);
    assert!(c.apply_json(&json!(1)).unwrap().is_empty());
}

#[test]
fn map_replaces_and_arraymap_expands_in_order() {
    let c = chain(&[
        Transform::Map(p(".payload")),
        Transform::ArrayMap(p(".readings")),
        Transform::Filter(p(".ok")),
        Transform::Map(p("{v: .v, n: 1}")),
    ]);
    let out = c
        .apply_json(&json!({"payload": {"readings": [
            {"v": 1, "ok": true}, {"v": 2, "ok": false}, {"v": 3.5, "ok": true}
        ]}}))
        .unwrap();
    assert_eq!(out, [json!({"v": 1, "n": 1}), json!({"v": 3.5, "n": 1})]);
}

#[test]
fn map_with_no_output_drops_the_record() {
    let c = chain(&[Transform::Map(p(".[]"))]);
    assert!(c.apply_json(&json!([])).unwrap().is_empty());
    // Only the first output counts.
    assert_eq!(c.apply_json(&json!([7, 8])).unwrap(), [json!(7)]);
}

#[test]
fn std_functions_are_available() {
    let c = chain(&[Transform::Map(p(
        "{t: (.mqtt_topic | split(\"/\") | last), s: (.payload | implode)}",
    ))]);
    let out = c
        .apply_json(&json!({"mqtt_topic": "a/b", "payload": [104, 105]}))
        .unwrap();
    assert_eq!(out, [json!({"t": "b", "s": "hi"})]);
}

#[test]
fn bad_expression_is_refused_with_its_byte_offset() {
    let msg = Program::compile(".a | (").unwrap_err();
    assert!(msg.contains("byte"), "{msg}");
}

#[test]
fn undefined_function_is_a_compile_error() {
    let msg = Program::compile("nosuchfn(1)").unwrap_err();
    assert!(msg.contains("nosuchfn"), "{msg}");
    assert!(msg.contains("at byte 0"), "{msg}");
}

#[test]
fn runtime_error_is_a_value_naming_the_step() {
    let c = chain(&[Transform::Map(p(".")), Transform::Map(p(".a + 1"))]);
    let err = c.apply_json(&json!({"a": "text"})).unwrap_err();
    assert_eq!((err.index, err.kind), (1, Kind::Map));
    assert!(!err.message.is_empty());
    // The next record is unaffected.
    assert_eq!(c.apply_json(&json!({"a": 1})).unwrap(), [json!(2)]);
}

#[test]
fn non_boolean_filter_and_non_array_arraymap_are_runtime_errors() {
    let c = chain(&[Transform::Filter(p(".x"))]);
    let err = c.apply_json(&json!({"x": 1})).unwrap_err();
    assert!(err.message.contains("boolean"), "{}", err.message);
    let c = chain(&[Transform::ArrayMap(p(".x"))]);
    let err = c.apply_json(&json!({"x": {}})).unwrap_err();
    assert!(err.message.contains("array"), "{}", err.message);
}

#[test]
fn halt_is_an_error_not_an_exit() {
    let c = chain(&[Transform::Map(p("halt"))]);
    let err = c.apply_json(&json!(1)).unwrap_err();
    assert!(err.message.contains("halt"), "{}", err.message);
}

#[test]
fn json_round_trips_through_jaq_values() {
    let v = json!({"a": [1, -2, 3.25, 18446744073709551615u64, null, true, "ü"], "b": {}});
    assert_eq!(from_val(&to_val(&v)), v);
}

/// Regression (found by hand): deep or long programs overflowed the stack
/// in jaq's parser/compiler. They are refused with a message; programs at the limits compile
/// and run on a 2 MiB stack (a Tokio worker's).
#[test]
fn deeply_nested_or_very_long_programs_are_refused_not_a_stack_overflow() {
    let on_small_stack = |f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(f)
            .unwrap()
            .join()
            .unwrap();
    };
    on_small_stack(Box::new(|| {
        let n = 100_000;
        let hostile = [
            format!("{}.{}", "(".repeat(n), ")".repeat(n)),
            format!("{}1{}", "[".repeat(n), "]".repeat(n)),
            format!("{}1{}", "{a:".repeat(n), "}".repeat(n)),
            format!("\"{}.{}\"", "\\(\"".repeat(n), "\")".repeat(n)),
            format!("1{}", "+1".repeat(n)),
            format!(".{}", "|.".repeat(n)),
            format!("{}1", "-".repeat(n)),
            format!("{}.{}", "if . then ".repeat(n), " end".repeat(n)),
            format!("{}.", ". as $x | ".repeat(n)),
            "x".repeat(MAX_JQ_LEN + 1),
        ];
        for code in hostile {
            let e = Program::compile(&code)
                .err()
                .unwrap_or_else(|| panic!("accepted {}", &code[..40]));
            assert!(
                e.contains("nested") || e.contains("operators") || e.contains("bytes"),
                "{e}"
            );
        }
    }));
    on_small_stack(Box::new(|| {
        let at_limit = [
            format!(
                "{}.{}",
                "(".repeat(MAX_JQ_NESTING),
                ")".repeat(MAX_JQ_NESTING)
            ),
            format!("1{}", "+1".repeat(MAX_JQ_OPERATORS)),
            format!(".{}", "|.".repeat(MAX_JQ_OPERATORS)),
            format!("{}.", ". as $x | ".repeat(MAX_JQ_OPERATORS / 2)),
            format!(
                "{}1{}{}",
                "(".repeat(MAX_JQ_NESTING),
                "+1".repeat(MAX_JQ_OPERATORS),
                ")".repeat(MAX_JQ_NESTING)
            ),
        ];
        for code in at_limit {
            let c = Program::compile(&code)
                .map(|p| Chain::new(&[Transform::Map(p)]))
                .unwrap_or_else(|e| panic!("refused {}: {e}", &code[..40]));
            c.apply_json(&json!({"a": 1})).unwrap();
        }
    }));
}
