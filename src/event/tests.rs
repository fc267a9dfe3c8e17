//! The event's rules, from the parser's side.

use super::*;
use proptest::prelude::*;
use serde_json::Map;
use serde_json::json;

fn parse(value: Value) -> Result<Event, InvalidEvent> {
    Event::from_value(value, &EventRules::default(), Arrival::now())
}

fn field_of(value: Value) -> (&'static str, &'static str) {
    let error = parse(value).unwrap_err();
    (error.code, error.field)
}

#[test]
fn a_well_formed_event_parses() {
    let event = parse(json!({
        "user_id": 123, "asin": "B08XXXX", "event_type": "add_to_cart",
        "metadata": {"page": "product_detail"}
    }))
    .unwrap();
    assert_eq!(event.actor, Actor::User(UserId::new(123).unwrap()));
    assert_eq!(event.asin.as_str(), "B08XXXX");
    assert_eq!(event.event_type, EventType::AddToCart);
    assert_eq!(
        event.metadata.unwrap().as_json(),
        r#"{"page":"product_detail"}"#
    );
    assert!(!event.client_event_id);
    assert_eq!(event.event_id.get_version_num(), 7);
}

#[test]
fn a_client_event_id_is_kept() {
    let id = "7d444840-9dc0-11d1-b245-5ffdce74fad2";
    let event =
        parse(json!({"user_id": 1, "asin": "A", "event_type": "view", "event_id": id})).unwrap();
    assert_eq!(event.event_id.to_string(), id);
    assert!(event.client_event_id);
}

#[test]
fn each_rule_names_its_field() {
    let base = json!({"user_id": 1, "asin": "A", "event_type": "view"});
    let with = |key: &str, value: Value| {
        let mut v = base.clone();
        v[key] = value;
        v
    };
    assert_eq!(
        field_of(json!({"asin": "A", "event_type": "view"})),
        ("missing_field", "user_id")
    );
    assert_eq!(
        field_of(with("user_id", json!(0))),
        ("invalid_field", "user_id")
    );
    assert_eq!(
        field_of(with("user_id", json!(-5))),
        ("invalid_field", "user_id")
    );
    assert_eq!(
        field_of(with("user_id", json!(1.5))),
        ("invalid_field", "user_id")
    );
    assert_eq!(
        field_of(with("user_id", json!(-2.0))),
        ("invalid_field", "user_id")
    );
    assert_eq!(
        field_of(with("user_id", json!(1e300))),
        ("invalid_field", "user_id")
    );
    assert!(
        parse(with("user_id", json!(435.0))).is_ok(),
        "an integral number is an integer"
    );
    assert_eq!(
        field_of(with("user_id", json!(u64::MAX))),
        ("invalid_field", "user_id")
    );
    assert_eq!(
        field_of(with("user_id", json!("1"))),
        ("invalid_field", "user_id")
    );
    assert_eq!(field_of(with("asin", json!(""))), ("invalid_field", "asin"));
    assert_eq!(
        field_of(with("asin", json!("a b"))),
        ("invalid_field", "asin")
    );
    assert_eq!(
        field_of(with("asin", json!("x".repeat(65)))),
        ("invalid_field", "asin")
    );
    assert_eq!(field_of(with("asin", json!(7))), ("invalid_field", "asin"));
    assert_eq!(
        field_of(with("event_type", json!("like"))),
        ("invalid_field", "event_type")
    );
    assert_eq!(
        field_of(with("event_type", json!("View"))),
        ("invalid_field", "event_type")
    );
    assert_eq!(
        field_of(with("metadata", json!([1]))),
        ("invalid_field", "metadata")
    );
    assert_eq!(
        field_of(with("metadata", json!({"a": "\u{0}"}))),
        ("invalid_field", "metadata")
    );
    assert_eq!(
        field_of(with("event_id", json!("not-a-uuid"))),
        ("invalid_field", "event_id")
    );
    assert_eq!(
        field_of(with(
            "event_id",
            json!("00000000-0000-0000-0000-000000000000")
        )),
        ("invalid_field", "event_id")
    );
}

#[test]
fn asin_of_exactly_the_limit_is_accepted() {
    assert!(Asin::new("é".repeat(MAX_ASIN_CHARS)).is_ok());
}

#[test]
fn a_user_id_is_an_exact_integer_or_refused() {
    let id = |text: &str| {
        let body = format!(r#"{{"user_id": {text}, "asin": "B0", "event_type": "view"}}"#);
        Event::from_json(body.as_bytes(), &EventRules::default(), Arrival::now())
            .map(|event| event.actor.user().unwrap().get())
    };
    assert_eq!(id("42").unwrap(), 42);
    assert_eq!(id("9223372036854775807").unwrap(), i64::MAX);
    // An integer however it is written, exactly (a float would make 9007199254740992 of it).
    for (text, exact) in [
        ("42.0", 42),
        ("4.2e1", 42),
        ("4200e-2", 42),
        ("0.42E2", 42),
        ("1e3", 1000),
        ("9007199254740993.0", 9_007_199_254_740_993),
        ("9.223372036854775807e18", i64::MAX),
    ] {
        assert_eq!(id(text).unwrap(), exact, "{text}");
    }
    for text in [
        "12345678901234567.5",
        "42.5",
        "4.25e1",
        "1e-3",
        "0.0",
        "-1.0",
        "9223372036854775808",
        "9.223372036854775808e18",
        "123456789012345678901234567890",
        "1e400",
        "1e99999999999999999999",
    ] {
        assert!(
            matches!(id(text), Err(ParseError::Invalid(ref e)) if e.field == "user_id"),
            "{text}"
        );
    }
    for path in [
        "1e3",
        "+5",
        "05",
        "-1",
        "0",
        " 5",
        "5 ",
        "",
        "9223372036854775808",
    ] {
        assert!(path.parse::<UserId>().is_err(), "{path:?}");
    }
    assert_eq!("5".parse::<UserId>().unwrap().get(), 5);
}

#[test]
fn a_batch_builds_no_more_than_its_limit_and_nothing_of_nested_arrays() {
    let zeros = format!("{{\"events\": [{}0]}}", "0,".repeat(10_000));
    assert!(matches!(
        Batch::from_json(zeros.as_bytes(), 500).unwrap().events,
        Elements::TooMany
    ));
    let nested = format!("{{\"events\": [[{}{{}}]]}}", "{},".repeat(10_000));
    match Batch::from_json(nested.as_bytes(), 500).unwrap().events {
        Elements::Items(items) => {
            assert_eq!(items.len(), 1);
            assert!(matches!(items[0], Item::Other("an array")));
        }
        _ => panic!("one element"),
    }
    // What is past the limit is still read for syntax.
    let broken = format!("{{\"events\": [{}0,]}}", "0,".repeat(600));
    assert!(matches!(
        Batch::from_json(broken.as_bytes(), 500),
        Err(BatchError::Syntax(_))
    ));
    assert!(matches!(
        Batch::from_json(b"[1]", 500),
        Err(BatchError::NotAnEnvelope)
    ));
    assert!(matches!(
        Batch::from_json(b"{}", 500),
        Err(BatchError::NotAnEnvelope)
    ));
}

#[test]
fn a_body_that_is_not_json_is_a_syntax_error() {
    let limits = EventRules::default();
    assert!(matches!(
        Event::from_json(b"{", &limits, Arrival::now()),
        Err(ParseError::Syntax(_))
    ));
    assert!(matches!(
        Event::from_json(b"[1]", &limits, Arrival::now()),
        Err(ParseError::NotAnObject)
    ));
    assert!(matches!(
        Event::from_json(b"", &limits, Arrival::now()),
        Err(ParseError::Syntax(_))
    ));
    // A field events do not have is read as strictly as theirs, though it is dropped.
    let too_deep = ["[".repeat(200), "]".repeat(200)].concat();
    for extra in [
        &br#""\ud800""#[..],
        &b"1e400"[..],
        &b"\"\xff\""[..],
        too_deep.as_bytes(),
    ] {
        let body = [
            &br#"{"user_id": 1, "asin": "A", "event_type": "view", "extra": "#[..],
            extra,
            b"}",
        ]
        .concat();
        assert!(
            matches!(
                Event::from_json(&body, &limits, Arrival::now()),
                Err(ParseError::Syntax(_))
            ),
            "{}",
            String::from_utf8_lossy(&body)
        );
    }
    let fine = br#"{"user_id": 1, "asin": "A", "event_type": "view", "extra": {"a": [1, null]}}"#;
    assert!(Event::from_json(fine, &limits, Arrival::now()).is_ok());
}

#[test]
fn exactly_one_of_user_id_and_anonymous_id_names_the_actor() {
    let both = json!({"user_id": 1, "anonymous_id": "a", "asin": "A", "event_type": "view"});
    assert_eq!(field_of(both), ("invalid_field", "anonymous_id"));
    let neither = parse(json!({"asin": "A", "event_type": "view"})).unwrap_err();
    assert_eq!((neither.code, neither.field), ("missing_field", "user_id"));
    assert!(
        neither.message.contains("anonymous_id"),
        "{}",
        neither.message
    );
    // null counts as absent, as for every optional field.
    let null_user =
        json!({"user_id": null, "anonymous_id": "a", "asin": "A", "event_type": "view"});
    assert!(parse(null_user).is_ok());
    for bad in [
        json!(""),
        json!("a b"),
        json!("a{b}"),
        json!("x".repeat(65)),
        json!(5),
        json!("é"),
    ] {
        let event = json!({"anonymous_id": bad, "asin": "A", "event_type": "view"});
        assert_eq!(field_of(event), ("invalid_field", "anonymous_id"), "{bad}");
    }
    assert!(
        parse(json!({"anonymous_id": "x".repeat(64), "asin": "A", "event_type": "view"})).is_ok()
    );
}

/// Any JSON value, nested up to a few levels.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("JSON numbers are finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,80}".prop_map(Value::from),
    ];
    leaf.prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::hash_map(".{0,12}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An RFC 3339 time anywhere in the calendar, most of them near now.
fn any_time() -> impl Strategy<Value = Value> {
    let now = Utc::now().timestamp();
    prop_oneof![
        (now - 30 * 86_400..now + 86_400),
        (-8_000_000_000_000_i64..8_000_000_000_000),
    ]
    .prop_map(|seconds| {
        Value::from(
            DateTime::from_timestamp(seconds, 0)
                .unwrap()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        )
    })
}

/// An object with the event's keys (each maybe present) holding any values: the shapes a
/// parser meets in the wild, far more often than random bytes reach them.
fn event_shaped() -> impl Strategy<Value = Value> {
    let field = |strategy: BoxedStrategy<Value>| prop::option::of(strategy);
    (
        field(prop_oneof![any_json(), any::<i64>().prop_map(Value::from)].boxed()),
        field(prop_oneof![any_json(), "[A-Z0-9]{0,70}".prop_map(Value::from)].boxed()),
        field(
            prop_oneof![
                any_json(),
                "(view|click|add_to_cart|purchase|rate|x)".prop_map(Value::from)
            ]
            .boxed(),
        ),
        field(any_json().boxed()),
        field(
            prop_oneof![
                any_json(),
                any::<u128>().prop_map(|u| Value::from(Uuid::from_u128(u).to_string()))
            ]
            .boxed(),
        ),
        field(prop_oneof![any_json(), any_time()].boxed()),
        field(prop_oneof![any_json(), any_time()].boxed()),
        field(prop_oneof![any_json(), "[a-z0-9.:-]{0,70}".prop_map(Value::from)].boxed()),
    )
        .prop_map(
            |(user_id, asin, event_type, metadata, event_id, timestamp, sent_at, anonymous_id)| {
                let mut object = Map::new();
                for (key, value) in [
                    ("user_id", user_id),
                    ("anonymous_id", anonymous_id),
                    ("asin", asin),
                    ("event_type", event_type),
                    ("metadata", metadata),
                    ("event_id", event_id),
                    ("timestamp", timestamp),
                    ("sent_at", sent_at),
                ] {
                    if let Some(value) = value {
                        object.insert(key.to_owned(), value);
                    }
                }
                Value::Object(object)
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn any_json_value_parses_or_fails_with_a_named_field(value in prop_oneof![any_json(), event_shaped()]) {
        let rules = EventRules::default();
        let arrival = Arrival::now();
        let parsed = Event::from_value(value.clone(), &rules, arrival);
        // The body's text parses to the same event, or fails on the same field.
        let text = value.to_string();
        let same_id = |event: Event| Event { event_id: Uuid::nil(), ..event };
        match (&parsed, Event::from_json(text.as_bytes(), &rules, arrival)) {
            (Ok(by_value), Ok(by_text)) => {
                prop_assert_eq!(by_value.client_event_id, by_text.client_event_id);
                if by_value.client_event_id {
                    prop_assert_eq!(by_value, &by_text);
                } else {
                    prop_assert_eq!(same_id(by_value.clone()), same_id(by_text));
                }
            }
            (Err(by_value), Err(ParseError::Invalid(by_text))) => prop_assert_eq!(by_value, &by_text),
            (Err(by_value), Err(ParseError::NotAnObject)) => prop_assert_eq!(by_value.field, "event"),
            (by_value, by_text) => prop_assert!(false, "{by_value:?} against {by_text:?}"),
        }
        match parsed {
            Ok(event) => {
                // What parses is valid by construction.
                let named_one = match &event.actor {
                    Actor::User(id) => id.get() > 0 && value.get("anonymous_id").is_none_or(Value::is_null),
                    Actor::Visitor(id) => !id.as_str().is_empty() && value.get("user_id").is_none_or(Value::is_null),
                };
                prop_assert!(named_one);
            }
            Err(invalid) => {
                prop_assert!(!invalid.message.is_empty());
                prop_assert!(invalid.message.contains(invalid.field) || invalid.field == "event");
            }
        }
    }
}

proptest! {
    #[test]
    fn user_ids_are_accepted_exactly_when_positive(id in any::<i64>()) {
        prop_assert_eq!(UserId::new(id).is_ok(), id > 0);
    }

    #[test]
    fn any_bytes_parse_or_fail_cleanly(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = Event::from_json(&body, &EventRules::default(), Arrival::now());
    }

    #[test]
    fn asins_without_space_or_control_up_to_the_limit_are_accepted(asin in "[A-Za-z0-9_-]{1,64}") {
        prop_assert!(Asin::new(asin).is_ok());
    }
}
