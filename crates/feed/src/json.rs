//! IV-MTR JSON: push bodies (`{"msgGrpId":…,"events":[…]}`, or `data`/`records`/`scans`, also
//! nested as in the pull API's `{"data":{"imb":…,"scans":[…]}}`), bare arrays of events, and JSON
//! lines. Keys in any case style; unknown keys ignored; numbers accepted where text is expected.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::record::{field_for_name, RawRecord, FIELD_COUNT};

/// Keys whose value holds the events of a body.
const EVENT_ARRAY_KEYS: [&str; 4] = ["events", "data", "records", "scans"];

/// A JSON string or number as text; borrowed when the input allows.
struct Text<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a number")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_string())))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(v.to_string())))
            }
        }
        deserializer.deserialize_any(TextVisitor)
    }
}

/// The scan fields of one JSON object.
#[derive(Default, Clone)]
pub(crate) struct JsonRecord<'de> {
    values: [Option<Cow<'de, str>>; FIELD_COUNT],
}

impl<'de> JsonRecord<'de> {
    /// Fields of `self`, with those of `outer` filling the gaps (an envelope's `imb` for its scans).
    pub(crate) fn inherit(mut self, outer: &JsonRecord<'de>) -> JsonRecord<'de> {
        for (mine, theirs) in self.values.iter_mut().zip(&outer.values) {
            if mine.is_none() {
                mine.clone_from(theirs);
            }
        }
        self
    }

    pub(crate) fn raw(&self) -> RawRecord<'_> {
        let mut record = RawRecord::default();
        for (i, value) in self.values.iter().enumerate() {
            if let Some(value) = value {
                record.set(crate::record::FIELDS[i], value.as_bytes());
            }
        }
        record
    }
}

/// A JSON object read as either an envelope (it has an event array) or a single event (it
/// has none); its own scan fields are kept in both cases.
pub(crate) struct JsonObject<'de> {
    pub(crate) fields: JsonRecord<'de>,
    /// The events of an envelope, or of a nested envelope, with their own inherited fields.
    pub(crate) events: Option<Vec<&'de RawValue>>,
    pub(crate) nested: Option<Box<JsonObject<'de>>>,
}

impl<'de> Deserialize<'de> for JsonObject<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = JsonObject<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object of scan fields or an envelope of events")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonObject<'de>, A::Error> {
                let mut object = JsonObject {
                    fields: JsonRecord::default(),
                    events: None,
                    nested: None,
                };
                while let Some(key) = map.next_key::<Text<'de>>()? {
                    let key = key.0;
                    if EVENT_ARRAY_KEYS.iter().any(|k| key.eq_ignore_ascii_case(k)) {
                        let value: &'de RawValue = map.next_value()?;
                        match value.get().trim_start().as_bytes().first() {
                            Some(b'[') => {
                                object.events = Some(
                                    serde_json::from_str(value.get()).map_err(de::Error::custom)?,
                                );
                            }
                            Some(b'{') => {
                                let nested: JsonObject<'de> =
                                    serde_json::from_str(value.get()).map_err(de::Error::custom)?;
                                object.nested = Some(Box::new(nested));
                            }
                            _ => {}
                        }
                    } else if let Some(field) = field_for_name(&key) {
                        object.fields.values[field as usize] =
                            map.next_value::<Option<Text<'de>>>()?.map(|t| t.0);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(object)
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

impl<'de> JsonObject<'de> {
    /// Whether this object carries events rather than being one.
    pub(crate) fn is_envelope(&self) -> bool {
        self.events.is_some() || self.nested.as_ref().is_some_and(|n| n.is_envelope())
    }

    /// The event array and the fields its events inherit, following nested envelopes.
    pub(crate) fn event_list(self) -> (Vec<&'de RawValue>, JsonRecord<'de>) {
        match (self.events, self.nested) {
            (Some(events), _) => (events, self.fields),
            (None, Some(nested)) => {
                let outer = self.fields;
                let (events, inner) = nested.event_list();
                (events, inner.inherit(&outer))
            }
            (None, None) => (Vec::new(), self.fields),
        }
    }
}
