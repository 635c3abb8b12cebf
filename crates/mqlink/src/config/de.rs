//! A serde `Deserializer` over the spanned [`Node`] tree.
//!
//! Why not the YAML/TOML crates' own deserializers: one implementation for both formats
//! means one set of coercions and one error shape, and every error is stamped with the
//! location of the innermost node (or key) that produced it. Coercions a config user
//! expects: any scalar is accepted where a string is wanted (`password: 123456`,
//! `protocol: 3.1`), a string that parses as a number or bool is accepted where one is
//! wanted (`port: "${PORT}"`), and `null` / an empty value is an empty struct
//! (`sink: { stdout: }`).

use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

use super::node::{Key, Kind, Loc, Node, Resolved, resolve_plain};

/// A deserialization error with the location of the node that caused it.
#[derive(Debug)]
pub(crate) struct DeError {
    pub msg: String,
    pub loc: Option<Loc>,
}

impl DeError {
    fn at(mut self, loc: Loc) -> Self {
        self.loc.get_or_insert(loc);
        self
    }
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DeError {
            msg: msg.to_string(),
            loc: None,
        }
    }

    // serde's defaults quote the offending string; it may be a secret put in the wrong
    // place (`tokens: <token>` instead of a list), so strings are described, not shown.
    fn invalid_type(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        de::Error::custom(format_args!(
            "invalid type: {}, expected {exp}",
            describe(&unexp)
        ))
    }

    fn invalid_value(unexp: de::Unexpected<'_>, exp: &dyn de::Expected) -> Self {
        de::Error::custom(format_args!(
            "invalid value: {}, expected {exp}",
            describe(&unexp)
        ))
    }
}

fn describe(unexp: &de::Unexpected<'_>) -> String {
    match unexp {
        de::Unexpected::Str(_) => "a string".into(),
        de::Unexpected::Bytes(_) => "bytes".into(),
        other => other.to_string(),
    }
}

/// Deserializes one node.
pub(crate) struct De<'a>(pub &'a Node);

impl De<'_> {
    fn is_null(&self) -> bool {
        match &self.0.kind {
            Kind::Plain(s) => matches!(resolve_plain(s), Resolved::Null),
            _ => false,
        }
    }

    fn string_form(&self) -> Option<&str> {
        match &self.0.kind {
            Kind::Str(s) | Kind::Plain(s) => Some(s),
            _ => None,
        }
    }
}

macro_rules! lenient {
    ($($method:ident => $ty:ty, $visit:ident;)*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
            if let Some(s) = self.string_form()
                && let Ok(v) = s.trim().parse::<$ty>()
            {
                return visitor.$visit(v).map_err(|e: DeError| e.at(self.0.loc));
            }
            self.deserialize_any(visitor)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for De<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        let loc = self.0.loc;
        match &self.0.kind {
            Kind::Bool(b) => visitor.visit_bool(*b),
            Kind::Int(i) => visitor.visit_i64(*i),
            Kind::Float(f) => visitor.visit_f64(*f),
            Kind::Str(s) => visitor.visit_str(s),
            Kind::Plain(s) => match resolve_plain(s) {
                Resolved::Null => visitor.visit_unit(),
                Resolved::Bool(b) => visitor.visit_bool(b),
                Resolved::Int(i) => visitor.visit_i64(i),
                Resolved::Float(f) => visitor.visit_f64(f),
                Resolved::Str => visitor.visit_str(s),
            },
            Kind::Seq(items) => {
                let mut access = SeqDe { iter: items.iter() };
                let v = visitor.visit_seq(&mut access)?;
                if access.iter.len() > 0 {
                    return Err(de::Error::invalid_length(items.len(), &"fewer elements"));
                }
                Ok(v)
            }
            Kind::Map(entries) => visitor.visit_map(MapDe {
                iter: entries.iter(),
                value: None,
            }),
        }
        .map_err(|e: DeError| e.at(loc))
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        if self.is_null() {
            visitor.visit_none()
        } else {
            let loc = self.0.loc;
            visitor.visit_some(self).map_err(|e: DeError| e.at(loc))
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        match self.0.scalar_text() {
            Some(s) => visitor.visit_str(&s).map_err(|e: DeError| e.at(self.0.loc)),
            None => self.deserialize_any(visitor),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    lenient! {
        deserialize_bool => bool, visit_bool;
        deserialize_i8 => i8, visit_i8;
        deserialize_i16 => i16, visit_i16;
        deserialize_i32 => i32, visit_i32;
        deserialize_i64 => i64, visit_i64;
        deserialize_u8 => u8, visit_u8;
        deserialize_u16 => u16, visit_u16;
        deserialize_u32 => u32, visit_u32;
        deserialize_u64 => u64, visit_u64;
        deserialize_f32 => f32, visit_f32;
        deserialize_f64 => f64, visit_f64;
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_any(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let loc = self.0.loc;
        visitor
            .visit_newtype_struct(self)
            .map_err(|e: DeError| e.at(loc))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        if self.is_null() {
            return visitor
                .visit_map(MapDe {
                    iter: [].iter(),
                    value: None,
                })
                .map_err(|e: DeError| e.at(self.0.loc));
        }
        self.deserialize_any(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let loc = self.0.loc;
        match &self.0.kind {
            Kind::Str(s) | Kind::Plain(s) => visitor.visit_enum(s.as_str().into_deserializer()),
            Kind::Int(_) | Kind::Float(_) | Kind::Bool(_) => {
                let s = self.0.scalar_text().unwrap_or_default();
                visitor.visit_enum(s.as_str().into_deserializer())
            }
            Kind::Map(entries) if entries.len() == 1 => visitor.visit_enum(EnumDe(&entries[0])),
            _ => Err(de::Error::custom(format_args!(
                "expected exactly one of: {}",
                variants.join(", ")
            ))),
        }
        .map_err(|e: DeError| e.at(loc))
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        char bytes byte_buf unit_struct seq tuple tuple_struct map identifier
    }
}

struct SeqDe<'a> {
    iter: std::slice::Iter<'a, Node>,
}

impl<'de> de::SeqAccess<'de> for SeqDe<'_> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        match self.iter.next() {
            Some(node) => seed.deserialize(De(node)).map(Some),
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

struct MapDe<'a> {
    iter: std::slice::Iter<'a, (Key, Node)>,
    value: Option<&'a Node>,
}

impl<'de> de::MapAccess<'de> for MapDe<'_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        match self.iter.next() {
            Some((key, value)) => {
                self.value = Some(value);
                seed.deserialize(KeyDe(key)).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        match self.value.take() {
            Some(node) => seed.deserialize(De(node)),
            None => Err(de::Error::custom("value requested before key")),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.iter.len())
    }
}

/// Deserializes a map key (always a string), located at the key.
struct KeyDe<'a>(&'a Key);

impl<'de> de::Deserializer<'de> for KeyDe<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor
            .visit_str(&self.0.name)
            .map_err(|e: DeError| e.at(self.0.loc))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

struct EnumDe<'a>(&'a (Key, Node));

impl<'de, 'a> de::EnumAccess<'de> for EnumDe<'a> {
    type Error = DeError;
    type Variant = VariantDe<'a>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, VariantDe<'a>), DeError> {
        let (key, value) = self.0;
        Ok((seed.deserialize(KeyDe(key))?, VariantDe(value)))
    }
}

struct VariantDe<'a>(&'a Node);

impl<'de> de::VariantAccess<'de> for VariantDe<'_> {
    type Error = DeError;

    fn unit_variant(self) -> Result<(), DeError> {
        match &self.0.kind {
            Kind::Map(m) if m.is_empty() => Ok(()),
            _ if De(self.0).is_null() => Ok(()),
            _ => Err(DeError {
                msg: "this variant takes no settings".into(),
                loc: Some(self.0.loc),
            }),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, DeError> {
        seed.deserialize(De(self.0))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_seq(De(self.0), visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        de::Deserializer::deserialize_struct(De(self.0), "", fields, visitor)
    }
}
