//! Integer fields of JSON frames, read exactly.
//!
//! prost-reflect reads an integer field from whatever number serde_json
//! hands it, and serde_json hands over an integer literal that does not fit
//! `u64`/`i64` as an `f64`, rounded. prost-reflect then range-checks the
//! float against `u64::MAX as f64`, which is 2^64 (`u64::MAX` rounds up),
//! and casts it with `as`, which saturates: `"after_seq":
//! 18446744073709551616` became `u64::MAX` (a silent empty page), and
//! `-9223372036854775809` became `i64::MIN`, while the same number for a
//! `uint32` was refused. Its errors also name neither the field nor the
//! range ("number too large to fit in target type").
//!
//! [`Exact`] wraps the JSON deserializer of one message and follows
//! prost-reflect's walk through it (fields by JSON or proto name, lists,
//! maps, nested messages, the integer wrapper types): every value of an
//! integer field is read here, checked against the field's type, and handed
//! on as an in-range `u64` or `i64`, or refused with an error naming the
//! field and its range. Everything else passes through untouched, so every
//! other behaviour (and error) stays prost-reflect's.
//!
//! Not followed: extension fields and the inside of `google.protobuf.Any`
//! (prost-reflect reads those as before).

use std::fmt;

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde::de::{DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, Visitor};

/// `de`, about to read a whole `desc` message, with its integers checked.
pub(super) fn exact<D>(de: D, desc: &MessageDescriptor) -> Exact<D> {
    Exact {
        de,
        shape: message_shape(desc),
    }
}

/// A deserializer that knows what is about to be read from it.
pub(super) struct Exact<D> {
    de: D,
    shape: Shape,
}

/// What a value of the message being read is, as far as integers go.
#[derive(Clone)]
enum Shape {
    /// An object of this message's fields.
    Message(MessageDescriptor),
    /// A repeated field: a list of values of this shape.
    List(Box<Shape>),
    /// A map field: an object whose keys are integers of this kind (if they
    /// are integers) and whose values are of this shape.
    Map(Option<Int>, Box<Shape>),
    /// One integer.
    Int(Int),
    /// No integer field can be inside: read as prost-reflect reads it.
    Other,
}

/// An integer field: its name (for errors) and its type's range.
#[derive(Clone)]
struct Int {
    field: FieldDescriptor,
    width: Width,
    role: Role,
}

/// Where in `field` the integer is.
#[derive(Clone, Copy)]
enum Role {
    /// The field's value (or one element of it).
    Value,
    /// A key of a map field.
    MapKey,
    /// A value of a map field.
    MapValue,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Width {
    I32,
    U32,
    I64,
    U64,
}

/// 2^53: integers above it are not all exact in an `f64`.
const EXACT_IN_F64: i128 = 1 << 53;

impl Width {
    fn of(kind: &Kind) -> Option<Width> {
        match kind {
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Some(Width::I32),
            Kind::Uint32 | Kind::Fixed32 => Some(Width::U32),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Some(Width::I64),
            Kind::Uint64 | Kind::Fixed64 => Some(Width::U64),
            _ => None,
        }
    }

    fn range(self) -> (i128, i128) {
        match self {
            Width::I32 => (i32::MIN.into(), i32::MAX.into()),
            Width::U32 => (0, u32::MAX.into()),
            Width::I64 => (i64::MIN.into(), i64::MAX.into()),
            Width::U64 => (0, u64::MAX.into()),
        }
    }

    /// The integer wrapper types: prost-reflect reads them as bare numbers.
    fn of_wrapper(full_name: &str) -> Option<Width> {
        match full_name {
            "google.protobuf.Int32Value" => Some(Width::I32),
            "google.protobuf.UInt32Value" => Some(Width::U32),
            "google.protobuf.Int64Value" => Some(Width::I64),
            "google.protobuf.UInt64Value" => Some(Width::U64),
            _ => None,
        }
    }
}

/// The well-known types prost-reflect reads in their own JSON form; none of
/// them holds an integer field in that form (Any is not followed).
fn is_special_wkt(full_name: &str) -> bool {
    matches!(
        full_name,
        "google.protobuf.Any"
            | "google.protobuf.Timestamp"
            | "google.protobuf.Duration"
            | "google.protobuf.FloatValue"
            | "google.protobuf.DoubleValue"
            | "google.protobuf.BoolValue"
            | "google.protobuf.StringValue"
            | "google.protobuf.BytesValue"
            | "google.protobuf.FieldMask"
            | "google.protobuf.Struct"
            | "google.protobuf.ListValue"
            | "google.protobuf.Value"
            | "google.protobuf.Empty"
    )
}

fn message_shape(desc: &MessageDescriptor) -> Shape {
    Shape::Message(desc.clone())
}

/// The shape of a field's whole value.
fn field_shape(field: &FieldDescriptor) -> Shape {
    if field.is_map() {
        let Kind::Message(entry) = field.kind() else {
            return Shape::Other;
        };
        let key = Width::of(&entry.map_entry_key_field().kind()).map(|width| Int {
            field: field.clone(),
            width,
            role: Role::MapKey,
        });
        let value = match field_shape(&entry.map_entry_value_field()) {
            // Named after the map, not its entry's `value` field.
            Shape::Int(int) => Shape::Int(Int {
                field: field.clone(),
                role: Role::MapValue,
                ..int
            }),
            value => value,
        };
        if key.is_none() && matches!(value, Shape::Other) {
            return Shape::Other;
        }
        Shape::Map(key, Box::new(value))
    } else if field.is_list() {
        match one_value_shape(field) {
            Shape::Other => Shape::Other,
            element => Shape::List(Box::new(element)),
        }
    } else {
        one_value_shape(field)
    }
}

/// The shape of one value of `field` (one element, if it is repeated).
fn one_value_shape(field: &FieldDescriptor) -> Shape {
    let kind = field.kind();
    let width = match &kind {
        Kind::Message(desc) => {
            let name = desc.full_name();
            if let Some(width) = Width::of_wrapper(name) {
                Some(width)
            } else if is_special_wkt(name) {
                return Shape::Other;
            } else {
                return Shape::Message(desc.clone());
            }
        }
        kind => Width::of(kind),
    };
    match width {
        Some(width) => Shape::Int(Int {
            field: field.clone(),
            width,
            role: Role::Value,
        }),
        None => Shape::Other,
    }
}

impl Int {
    fn range_error(&self) -> String {
        let (min, max) = self.width.range();
        let name = self.field.name();
        match self.role {
            Role::Value => format!("{name} must be an integer from {min} to {max}"),
            Role::MapKey => format!("keys of {name} must be integers from {min} to {max}"),
            Role::MapValue => format!("values of {name} must be integers from {min} to {max}"),
        }
    }

    fn in_range(&self, n: i128) -> Result<i128, String> {
        let (min, max) = self.width.range();
        if (min..=max).contains(&n) {
            Ok(n)
        } else {
            Err(self.range_error())
        }
    }

    /// A JSON number with a fraction or an exponent, or an integer literal
    /// too large for `u64`/`i64` (serde_json gives both as floats).
    fn of_f64(&self, v: f64) -> Result<i128, String> {
        // The bounds are powers of two, exact in an f64, and compared before
        // any cast: `as` would saturate.
        const TWO_POW_63: f64 = 9_223_372_036_854_775_808.0;
        const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;
        if v.fract() != 0.0 || !(-TWO_POW_63..TWO_POW_64).contains(&v) {
            return Err(self.range_error());
        }
        // Exact: `v` is integral and within the range of an i128.
        let n = self.in_range(v as i128)?;
        if n.abs() > EXACT_IN_F64 {
            // The float may be a rounded literal, even one out of range
            // (-2^63 - 1 reads as -2^63): do not guess.
            return Err(format!(
                "{} (write integers beyond 2^53 without a fraction or exponent, or as a \
                 string: such numbers are rounded)",
                self.range_error()
            ));
        }
        Ok(n)
    }

    fn of_str(&self, s: &str) -> Result<i128, String> {
        s.parse::<i128>()
            .map_err(|_| self.range_error())
            .and_then(|n| self.in_range(n))
    }
}

// ---------------------------------------------------------------------------
// The serde plumbing: each wrapper passes every call on, and wraps what it
// passes so that the next level still knows its shape.

macro_rules! deserialize_methods {
    ($wrap:ident; $($method:ident($($arg:ident: $ty:ty),*);)*) => {$(
        fn $method<V: Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, Self::Error> {
            $wrap!(self, visitor, |de, v| de.$method($($arg,)* v))
        }
    )*};
}

macro_rules! every_deserialize_method_but_any {
    ($wrap:ident) => {
        deserialize_methods! { $wrap;
            deserialize_bool(); deserialize_i8(); deserialize_i16(); deserialize_i32();
            deserialize_i64(); deserialize_i128(); deserialize_u8(); deserialize_u16();
            deserialize_u32(); deserialize_u64(); deserialize_u128(); deserialize_f32();
            deserialize_f64(); deserialize_char(); deserialize_str(); deserialize_string();
            deserialize_bytes(); deserialize_byte_buf(); deserialize_option(); deserialize_unit();
            deserialize_unit_struct(name: &'static str);
            deserialize_newtype_struct(name: &'static str);
            deserialize_seq(); deserialize_tuple(len: usize);
            deserialize_tuple_struct(name: &'static str, len: usize);
            deserialize_map();
            deserialize_struct(name: &'static str, fields: &'static [&'static str]);
            deserialize_enum(name: &'static str, variants: &'static [&'static str]);
            deserialize_identifier(); deserialize_ignored_any();
        }
    };
}

/// `Exact` passes a call on with its visitor wrapped, unless nothing of
/// interest can be inside.
macro_rules! wrap_by_shape {
    ($self:ident, $visitor:ident, |$de:ident, $v:ident| $call:expr) => {{
        let Exact { de: $de, shape } = $self;
        match shape {
            Shape::Other => {
                let $v = $visitor;
                $call
            }
            shape => {
                let $v = Wrap {
                    inner: $visitor,
                    shape,
                };
                $call
            }
        }
    }};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Exact<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        // prost-reflect reads every integer with `deserialize_any`.
        match self.shape {
            Shape::Int(int) => self.de.deserialize_any(IntVisitor {
                inner: visitor,
                int,
            }),
            shape => Exact { de: self.de, shape }.deserialize_other(visitor),
        }
    }

    every_deserialize_method_but_any!(wrap_by_shape);

    fn is_human_readable(&self) -> bool {
        self.de.is_human_readable()
    }
}

impl<'de, D: Deserializer<'de>> Exact<D> {
    fn deserialize_other<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        wrap_by_shape!(self, visitor, |de, v| de.deserialize_any(v))
    }
}

macro_rules! forward_visits {
    ($($method:ident($ty:ty);)*) => {$(
        fn $method<E: serde::de::Error>(self, v: $ty) -> Result<Self::Value, E> {
            self.inner.$method(v)
        }
    )*};
}

/// The scalar visits, passed on as they are.
macro_rules! forward_scalar_visits {
    () => {
        forward_visits! {
            visit_bool(bool); visit_i8(i8); visit_i16(i16); visit_i32(i32); visit_i64(i64);
            visit_i128(i128); visit_u8(u8); visit_u16(u16); visit_u32(u32); visit_u64(u64);
            visit_u128(u128); visit_f32(f32); visit_f64(f64); visit_char(char);
            visit_str(&str); visit_borrowed_str(&'de str); visit_string(String);
            visit_bytes(&[u8]); visit_borrowed_bytes(&'de [u8]); visit_byte_buf(Vec<u8>);
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            self.inner.visit_none()
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            self.inner.visit_unit()
        }
        fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
            self.inner.visit_enum(data)
        }
    };
}

/// A visitor of prost-reflect's, whose maps, lists and `Some` get the shape
/// of what they hold.
struct Wrap<V> {
    inner: V,
    shape: Shape,
}

impl<'de, V: Visitor<'de>> Visitor<'de> for Wrap<V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    forward_scalar_visits!();

    fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        self.inner.visit_some(Exact {
            de,
            shape: self.shape,
        })
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        self.inner.visit_newtype_struct(Exact {
            de,
            shape: self.shape,
        })
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        match self.shape {
            Shape::List(element) => self.inner.visit_seq(Elements {
                seq,
                shape: *element,
            }),
            _ => self.inner.visit_seq(seq),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        match self.shape {
            Shape::Message(desc) => self.inner.visit_map(Fields {
                map,
                desc,
                next: Shape::Other,
            }),
            Shape::Map(key, value) => self.inner.visit_map(Entries {
                map,
                key,
                value: *value,
            }),
            _ => self.inner.visit_map(map),
        }
    }
}

/// Reads one integer exactly, then hands it to prost-reflect's visitor as a
/// `u64` or `i64` that it converts without loss.
struct IntVisitor<V> {
    inner: V,
    int: Int,
}

impl<V> IntVisitor<V> {
    fn accept<'de, E: serde::de::Error>(self, n: Result<i128, String>) -> Result<V::Value, E>
    where
        V: Visitor<'de>,
    {
        let n = n.map_err(E::custom)?;
        match self.int.width {
            // In range, so these casts are exact.
            Width::U32 | Width::U64 => self.inner.visit_u64(n as u64),
            Width::I32 | Width::I64 => self.inner.visit_i64(n as i64),
        }
    }
}

impl<'de, V: Visitor<'de>> Visitor<'de> for IntVisitor<V> {
    type Value = V::Value;

    // Other visits (bool, map, ...) keep serde's default: an "invalid type"
    // error naming what prost-reflect's visitor expects.
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
        let n = self.int.in_range(v.into());
        self.accept(n)
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
        let n = self.int.in_range(v.into());
        self.accept(n)
    }

    fn visit_i128<E: serde::de::Error>(self, v: i128) -> Result<Self::Value, E> {
        let n = self.int.in_range(v);
        self.accept(n)
    }

    fn visit_u128<E: serde::de::Error>(self, v: u128) -> Result<Self::Value, E> {
        let n = i128::try_from(v)
            .map_err(|_| self.int.range_error())
            .and_then(|v| self.int.in_range(v));
        self.accept(n)
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
        let n = self.int.of_f64(v);
        self.accept(n)
    }

    /// Canonical JSON writes 64-bit integers as strings (`"seq": "42"`).
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        let n = self.int.of_str(v);
        self.accept(n)
    }
}

/// The fields of a message object: each key says what its value is.
struct Fields<A> {
    map: A,
    desc: MessageDescriptor,
    /// The shape of the value after the key just read.
    next: Shape,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Fields<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.next = Shape::Other;
        let lookup = FieldLookup {
            desc: &self.desc,
            found: &mut self.next,
        };
        self.map.next_key_seed(KeySeed { seed, on: lookup })
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        let shape = std::mem::replace(&mut self.next, Shape::Other);
        self.map.next_value_seed(ValueSeed { seed, shape })
    }

    fn size_hint(&self) -> Option<usize> {
        self.map.size_hint()
    }
}

/// The entries of a map field.
struct Entries<A> {
    map: A,
    key: Option<Int>,
    value: Shape,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for Entries<A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        match &self.key {
            Some(int) => self.map.next_key_seed(KeySeed { seed, on: int }),
            None => self.map.next_key_seed(seed),
        }
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        let shape = self.value.clone();
        self.map.next_value_seed(ValueSeed { seed, shape })
    }

    fn size_hint(&self) -> Option<usize> {
        self.map.size_hint()
    }
}

/// The elements of a repeated field.
struct Elements<A> {
    seq: A,
    shape: Shape,
}

impl<'de, A: SeqAccess<'de>> SeqAccess<'de> for Elements<A> {
    type Error = A::Error;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, A::Error> {
        let shape = self.shape.clone();
        self.seq.next_element_seed(ValueSeed { seed, shape })
    }

    fn size_hint(&self) -> Option<usize> {
        self.seq.size_hint()
    }
}

/// A seed for a value of a known shape.
struct ValueSeed<S> {
    seed: S,
    shape: Shape,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for ValueSeed<S> {
    type Value = S::Value;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<S::Value, D::Error> {
        self.seed.deserialize(Exact {
            de,
            shape: self.shape,
        })
    }
}

/// What to do with an object key as it is read.
trait OnKey {
    fn on_key(self, key: &str) -> Result<(), String>;
}

/// A message's key: finds the field as prost-reflect will (JSON name first,
/// then proto name) and notes its shape. Unknown keys are prost-reflect's to
/// refuse.
struct FieldLookup<'a> {
    desc: &'a MessageDescriptor,
    found: &'a mut Shape,
}

impl OnKey for FieldLookup<'_> {
    fn on_key(self, key: &str) -> Result<(), String> {
        if let Some(field) = self
            .desc
            .get_field_by_json_name(key)
            .or_else(|| self.desc.get_field_by_name(key))
        {
            *self.found = field_shape(&field);
        }
        Ok(())
    }
}

/// A map's integer key: checked here, parsed again by prost-reflect.
impl OnKey for &Int {
    fn on_key(self, key: &str) -> Result<(), String> {
        self.of_str(key).map(drop)
    }
}

struct KeySeed<K, O> {
    seed: K,
    on: O,
}

impl<'de, K: DeserializeSeed<'de>, O: OnKey> DeserializeSeed<'de> for KeySeed<K, O> {
    type Value = K::Value;

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<K::Value, D::Error> {
        self.seed.deserialize(KeyDe { de, on: self.on })
    }
}

/// The deserializer of one object key.
struct KeyDe<D, O> {
    de: D,
    on: O,
}

macro_rules! wrap_key {
    ($self:ident, $visitor:ident, |$de:ident, $v:ident| $call:expr) => {{
        let KeyDe { de: $de, on } = $self;
        let $v = KeyVisitor {
            inner: $visitor,
            on,
        };
        $call
    }};
}

impl<'de, D: Deserializer<'de>, O: OnKey> Deserializer<'de> for KeyDe<D, O> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        wrap_key!(self, visitor, |de, v| de.deserialize_any(v))
    }

    every_deserialize_method_but_any!(wrap_key);

    fn is_human_readable(&self) -> bool {
        self.de.is_human_readable()
    }
}

struct KeyVisitor<V, O> {
    inner: V,
    on: O,
}

impl<'de, V: Visitor<'de>, O: OnKey> Visitor<'de> for KeyVisitor<V, O> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
        self.on.on_key(v).map_err(E::custom)?;
        self.inner.visit_str(v)
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        self.on.on_key(v).map_err(E::custom)?;
        self.inner.visit_borrowed_str(v)
    }

    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Self::Value, E> {
        self.on.on_key(&v).map_err(E::custom)?;
        self.inner.visit_string(v)
    }

    forward_visits! {
        visit_bool(bool); visit_i8(i8); visit_i16(i16); visit_i32(i32); visit_i64(i64);
        visit_i128(i128); visit_u8(u8); visit_u16(u16); visit_u32(u32); visit_u64(u64);
        visit_u128(u128); visit_f32(f32); visit_f64(f64); visit_char(char);
        visit_bytes(&[u8]); visit_borrowed_bytes(&'de [u8]); visit_byte_buf(Vec<u8>);
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        self.inner.visit_some(de)
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        self.inner.visit_newtype_struct(de)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_seq(seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_map(map)
    }

    fn visit_enum<A: EnumAccess<'de>>(self, data: A) -> Result<Self::Value, A::Error> {
        self.inner.visit_enum(data)
    }
}

#[cfg(test)]
mod tests {
    use super::super::deserialize_whole;
    use prost::Message as _;
    use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, Value};
    use prost_types::field_descriptor_proto::{Label, Type};
    use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorProto, MessageOptions};

    fn field(name: &str, number: i32, ty: Type) -> FieldDescriptorProto {
        FieldDescriptorProto {
            name: Some(name.into()),
            number: Some(number),
            label: Some(Label::Optional as i32),
            r#type: Some(ty as i32),
            json_name: Some(name.into()),
            ..Default::default()
        }
    }

    fn typed(mut f: FieldDescriptorProto, type_name: &str) -> FieldDescriptorProto {
        f.type_name = Some(type_name.into());
        f
    }

    fn repeated(mut f: FieldDescriptorProto) -> FieldDescriptorProto {
        f.label = Some(Label::Repeated as i32);
        f
    }

    /// `t.Ints`: one field of every integer type, a double, a repeated
    /// uint64, a nested `t.Ints`, a `map<uint32, uint64>`, two wrappers.
    fn ints() -> MessageDescriptor {
        let by_id_entry = DescriptorProto {
            name: Some("ByIdEntry".into()),
            field: vec![
                field("key", 1, Type::Uint32),
                field("value", 2, Type::Uint64),
            ],
            options: Some(MessageOptions {
                map_entry: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut fields = vec![
            field("i32", 1, Type::Int32),
            field("s32", 2, Type::Sint32),
            field("sf32", 3, Type::Sfixed32),
            field("u32", 4, Type::Uint32),
            field("fx32", 5, Type::Fixed32),
            field("i64", 6, Type::Int64),
            field("s64", 7, Type::Sint64),
            field("sf64", 8, Type::Sfixed64),
            field("u64", 9, Type::Uint64),
            field("fx64", 10, Type::Fixed64),
            field("dbl", 11, Type::Double),
            repeated(field("list", 12, Type::Uint64)),
            typed(field("inner", 13, Type::Message), ".t.Ints"),
            repeated(typed(
                field("by_id", 14, Type::Message),
                ".t.Ints.ByIdEntry",
            )),
            typed(
                field("w64", 15, Type::Message),
                ".google.protobuf.UInt64Value",
            ),
            typed(
                field("w32", 16, Type::Message),
                ".google.protobuf.Int32Value",
            ),
            repeated(typed(field("inners", 17, Type::Message), ".t.Ints")),
        ];
        fields[0].json_name = Some("int32Alias".into());
        let file = FileDescriptorProto {
            name: Some("ints.proto".into()),
            package: Some("t".into()),
            syntax: Some("proto3".into()),
            dependency: vec!["google/protobuf/wrappers.proto".into()],
            message_type: vec![DescriptorProto {
                name: Some("Ints".into()),
                field: fields,
                nested_type: vec![by_id_entry],
                ..Default::default()
            }],
            ..Default::default()
        };
        let mut pool = DescriptorPool::global();
        pool.add_file_descriptor_proto(file)
            .expect("valid test file");
        pool.get_message_by_name("t.Ints").expect("t.Ints")
    }

    fn read(json: &str) -> Result<DynamicMessage, String> {
        deserialize_whole(json, ints())
    }

    fn value(json: &str, field: &str) -> Value {
        let message = read(json).unwrap_or_else(|e| panic!("{json}: {e}"));
        message
            .get_field_by_name(field)
            .unwrap_or_else(|| panic!("{json}: no {field}"))
            .into_owned()
    }

    fn refused(json: &str) -> String {
        match read(json) {
            Err(e) => e,
            // Not `{m:?}`: the Debug form of a recursive descriptor recurses.
            Ok(m) => panic!("{json}: accepted as {}", super::super::event_json(&m)),
        }
    }

    /// Every integer type: both ends of its range are read exactly, as
    /// numbers and as strings; one past either end is refused, naming the
    /// field and its range.
    #[test]
    fn each_integer_type_takes_exactly_its_range() {
        let cases: &[(&str, i128, i128)] = &[
            ("i32", i32::MIN.into(), i32::MAX.into()),
            ("s32", i32::MIN.into(), i32::MAX.into()),
            ("sf32", i32::MIN.into(), i32::MAX.into()),
            ("u32", 0, u32::MAX.into()),
            ("fx32", 0, u32::MAX.into()),
            ("i64", i64::MIN.into(), i64::MAX.into()),
            ("s64", i64::MIN.into(), i64::MAX.into()),
            ("sf64", i64::MIN.into(), i64::MAX.into()),
            ("u64", 0, u64::MAX.into()),
            ("fx64", 0, u64::MAX.into()),
        ];
        for &(name, min, max) in cases {
            let as_i128 = |v: Value| match v {
                Value::I32(v) => i128::from(v),
                Value::U32(v) => v.into(),
                Value::I64(v) => v.into(),
                Value::U64(v) => v.into(),
                other => panic!("{name}: {other:?}"),
            };
            for n in [min, max] {
                // 0 is the default, which reads back as set-to-default too.
                assert_eq!(as_i128(value(&format!(r#"{{"{name}": {n}}}"#), name)), n);
                assert_eq!(as_i128(value(&format!(r#"{{"{name}": "{n}"}}"#), name)), n);
            }
            let expected = format!("{name} must be an integer from {min} to {max}");
            for n in [min - 1, max + 1] {
                for json in [
                    format!(r#"{{"{name}": {n}}}"#),
                    format!(r#"{{"{name}": "{n}"}}"#),
                ] {
                    let e = refused(&json);
                    assert!(e.starts_with(&expected), "{json}: {e}");
                    assert!(e.contains(" at line 1 column "), "{json}: {e}");
                }
            }
        }
    }

    /// The bug: 2^64 went through serde_json as a float, passed
    /// prost-reflect's off-by-one check and saturated to u64::MAX.
    #[test]
    fn numbers_beyond_64_bits_are_refused_not_saturated() {
        let u64_range = "u64 must be an integer from 0 to 18446744073709551615";
        let i64_range = "i64 must be an integer from -9223372036854775808 to 9223372036854775807";
        for (json, expected) in [
            (r#"{"u64": 18446744073709551616}"#, u64_range),
            (r#"{"u64": 18446744073709551617}"#, u64_range),
            (r#"{"u64": 1e20}"#, u64_range),
            (r#"{"u64": 18446744073709551615.0}"#, u64_range),
            (
                r#"{"u64": 99999999999999999999999999999999999999999}"#,
                u64_range,
            ),
            (
                r#"{"u64": "99999999999999999999999999999999999999999"}"#,
                u64_range,
            ),
            (r#"{"i64": -9223372036854775809}"#, i64_range),
            (r#"{"i64": 9223372036854775807.0}"#, i64_range),
            (
                r#"{"u32": 18446744073709551616}"#,
                "u32 must be an integer from 0 to 4294967295",
            ),
        ] {
            let e = refused(json);
            assert!(e.starts_with(expected), "{json}: {e}");
        }
        // A double is not an integer field: 2^64 is a fine double.
        assert_eq!(
            value(r#"{"dbl": 18446744073709551616}"#, "dbl"),
            Value::F64(18_446_744_073_709_551_616.0)
        );
    }

    #[test]
    fn fractions_and_exponents() {
        for json in [
            r#"{"i32": 1.5}"#,
            r#"{"i32": "1.5"}"#,
            r#"{"i32": "1e3"}"#,
            r#"{"i32": "0x10"}"#,
            r#"{"i32": "lots"}"#,
            r#"{"i32": ""}"#,
            r#"{"i32": " 1"}"#,
        ] {
            let e = refused(json);
            assert!(
                e.starts_with("i32 must be an integer from -2147483648 to 2147483647"),
                "{json}: {e}"
            );
        }
        // Canonical JSON allows an exponent when the value is an integer.
        assert_eq!(value(r#"{"i32": 1e3}"#, "i32"), Value::I32(1000));
        assert_eq!(value(r#"{"i64": -2.0}"#, "i64"), Value::I64(-2));
        // Past 2^53 a float may already be rounded: refused, not guessed.
        let e = refused(r#"{"u64": 1e19}"#);
        assert!(
            e.starts_with(
                "u64 must be an integer from 0 to 18446744073709551615 (write integers beyond \
                 2^53 without a fraction or exponent, or as a string: such numbers are rounded)"
            ),
            "{e}"
        );
        assert_eq!(
            value(r#"{"u64": 10000000000000000000}"#, "u64"),
            Value::U64(10_000_000_000_000_000_000)
        );
    }

    #[test]
    fn nested_repeated_map_and_wrapper_integers_are_checked() {
        let u64_range = "u64 must be an integer from 0 to 18446744073709551615";
        for (json, expected) in [
            (r#"{"inner": {"u64": 18446744073709551616}}"#, u64_range),
            (r#"{"inner": {"inner": {"u64": "-1"}}}"#, u64_range),
            (
                r#"{"inners": [{}, {"u64": 18446744073709551616}]}"#,
                u64_range,
            ),
            (
                r#"{"list": [1, 18446744073709551616]}"#,
                "list must be an integer from 0 to 18446744073709551615",
            ),
            (
                r#"{"by_id": {"4294967296": "1"}}"#,
                "keys of by_id must be integers from 0 to 4294967295",
            ),
            (
                r#"{"by_id": {"1": 18446744073709551616}}"#,
                "values of by_id must be integers from 0 to 18446744073709551615",
            ),
            (
                r#"{"w64": 18446744073709551616}"#,
                "w64 must be an integer from 0 to 18446744073709551615",
            ),
            (
                r#"{"w32": "2147483648"}"#,
                "w32 must be an integer from -2147483648 to 2147483647",
            ),
            // Found by its JSON name as well as its proto name.
            (
                r#"{"int32Alias": 2147483648}"#,
                "i32 must be an integer from -2147483648 to 2147483647",
            ),
        ] {
            let e = refused(json);
            assert!(e.starts_with(expected), "{json}: {e}");
        }

        let m = read(
            r#"{"inner": {"u64": "18446744073709551615", "inner": {"i32": -7}},
                "inners": [{"u32": 4294967295}], "list": [1, "2", 3e0],
                "by_id": {"4294967295": "18446744073709551615"}, "w64": "5", "w32": null}"#,
        )
        .expect("valid");
        let wire = m.encode_to_vec();
        let back = DynamicMessage::decode(ints(), wire.as_slice()).expect("round trip");
        assert_eq!(back.encode_to_vec(), wire);
        let inner = m.get_field_by_name("inner").expect("inner");
        let inner = inner.as_message().expect("a message");
        assert_eq!(
            inner.get_field_by_name("u64").as_deref(),
            Some(&Value::U64(u64::MAX))
        );
        assert_eq!(
            m.get_field_by_name("list").as_deref(),
            Some(&Value::List(vec![
                Value::U64(1),
                Value::U64(2),
                Value::U64(3)
            ]))
        );
        let w64 = m.get_field_by_name("w64").expect("w64");
        let w64 = w64.as_message().expect("a wrapper message");
        assert_eq!(
            w64.get_field_by_name("value").as_deref(),
            Some(&Value::U64(5))
        );
        assert!(!m.has_field_by_name("w32"), "null leaves it unset");
    }

    #[test]
    fn everything_else_is_prost_reflects_to_judge() {
        for (json, expected) in [
            (r#"{"nope": 1}"#, "unrecognized field name 'nope'"),
            (r#"{"i32": true}"#, "invalid type: boolean `true`"),
            (
                r#"{"inner": 5}"#,
                "invalid type: integer `5`, expected a map",
            ),
            (
                r#"{"list": 5}"#,
                "invalid type: integer `5`, expected a list",
            ),
            (r#"{"i32": 1, "i32": 2}"#, ""),
        ] {
            match read(json) {
                Err(e) => assert!(e.contains(expected), "{json}: {e}"),
                Ok(_) => assert!(expected.is_empty(), "{json}: accepted"),
            }
        }
        assert_eq!(value(r#"{"i32": null}"#, "i32"), Value::I32(0));
    }
}
