//! The keys of the settings, asked of the types themselves through serde so that no list of them
//! is kept by hand: each section and its keys, and which keys take text (a string, a duration, a
//! URL, a path, an address), whose environment value is then taken verbatim.

use std::collections::BTreeSet;
use std::sync::LazyLock;

use serde::Deserialize;
use serde::de::value::{BorrowedStrDeserializer, Error};
use serde::de::{DeserializeSeed, Deserializer, MapAccess, Visitor};

use super::{ApiSettings, DatabaseSettings, HttpSettings, ScheduleSettings, SyncSettings};

/// A section of the settings, as its type declares it.
pub(super) struct Section {
    pub name: &'static str,
    pub keys: &'static [&'static str],
    /// The keys whose type is read from a string.
    pub text: Vec<&'static str>,
}

/// Each section and its keys. `targets` is a list, set whole by `SZB_TARGETS`, so it has no
/// keys of its own here.
pub(super) fn sections() -> Vec<Section> {
    vec![
        section::<DatabaseSettings>("database"),
        section::<ApiSettings>("api"),
        section::<ScheduleSettings>("schedule"),
        section::<SyncSettings>("sync"),
        section::<HttpSettings>("http"),
        Section {
            name: "targets",
            keys: &[],
            text: Vec::new(),
        },
    ]
}

/// Every section of the configuration file and its keys, as the types declare them: the
/// `[[targets]]` entries' keys under `targets`. The man page lists them.
pub fn config_keys() -> Vec<(&'static str, &'static [&'static str])> {
    sections()
        .into_iter()
        .map(|s| {
            let keys = if s.name == "targets" {
                fields::<super::Target>()
            } else {
                s.keys
            };
            (s.name, keys)
        })
        .collect()
}

fn section<T: for<'de> Deserialize<'de>>(name: &'static str) -> Section {
    let keys = fields::<T>();
    let text = keys
        .iter()
        .copied()
        .filter(|key| probe::<T>(Some(key)).text)
        .collect();
    Section { name, keys, text }
}

/// The dotted keys that take text, `database.url` or `sync.keep_runs`: a token of digits stays
/// a string, a cron with spaces is not split.
pub(super) fn text_keys() -> &'static BTreeSet<String> {
    static KEYS: LazyLock<BTreeSet<String>> = LazyLock::new(|| {
        sections()
            .iter()
            .flat_map(|s| s.text.iter().map(|key| format!("{}.{key}", s.name)))
            .collect()
    });
    &KEYS
}

/// The fields a settings struct deserializes, asked of serde itself so the list cannot drift.
pub(super) fn fields<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    probe::<T>(None).fields
}

/// What deserializing a struct told a [`Probe`].
#[derive(Default)]
struct Learnt {
    fields: &'static [&'static str],
    /// The value of the probed key was asked for as a string (through `Option`).
    text: bool,
}

/// Deserializes `T` from a [`Probe`] that offers `key` alone, if any.
fn probe<'de, T: Deserialize<'de>>(key: Option<&'static str>) -> Learnt {
    let mut learnt = Learnt::default();
    // The probe gives no value, so this always fails; what was asked of it is the answer.
    let _ = T::deserialize(Probe {
        key,
        learnt: &mut learnt,
    });
    learnt
}

/// A deserializer that records what is asked of it: as a struct, its field names (and it offers
/// one key, whose value is another probe); as a value, whether it is wanted as a string.
struct Probe<'a> {
    key: Option<&'static str>,
    learnt: &'a mut Learnt,
}

impl<'de> Deserializer<'de> for Probe<'_> {
    type Error = Error;

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.learnt.fields = fields;
        visitor.visit_map(self)
    }

    fn deserialize_str<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
        self.learnt.text = true;
        Err(serde::de::Error::custom("probed"))
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Error> {
        Err(serde::de::Error::custom("probed"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf unit
        unit_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

impl<'de> MapAccess<'de> for Probe<'_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        self.key
            .take()
            .map(|key| seed.deserialize(BorrowedStrDeserializer::new(key)))
            .transpose()
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        seed.deserialize(Probe {
            key: None,
            learnt: &mut *self.learnt,
        })
    }
}
