//! The REST inference request's JSON header (KServe V2), parsed straight into typed structs.
//!
//! Why not `serde_json::Value`: a `Value` costs 32 bytes per token and a map hundreds; a JSON
//! array of `{"a":0}` took 83 bytes of memory per byte of body (measured), so a 64 MiB body
//! would have taken 5.3 GiB before anything could refuse it. Here nothing
//! vqad does not use is kept (unknown fields and parameters are skipped unread), lists are
//! capped (`infer::MAX_*`) and tensor data is flattened into `f32`s or strings as it is read,
//! so what parsing allocates stays within a few times the JSON's size (checked by
//! `tests/serve_fuzz.rs` with a counting allocator).

use super::infer::{MAX_DIMS, MAX_ELEMENTS, MAX_TENSORS};
use serde::de::{self, DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use std::fmt;
use std::marker::PhantomData;

/// An inference request's JSON.
#[derive(Deserialize)]
pub struct Request {
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub parameters: Params,
    pub inputs: Bounded<Input, MAX_TENSORS>,
    #[serde(default)]
    pub outputs: Option<Bounded<Output, MAX_TENSORS>>,
}

/// One input tensor's JSON.
#[derive(Deserialize)]
pub struct Input {
    pub name: String,
    pub datatype: String,
    pub shape: Bounded<i64, MAX_DIMS>,
    #[serde(default)]
    pub parameters: Params,
    #[serde(default)]
    pub data: Option<Data>,
}

/// One requested output's JSON.
#[derive(Deserialize)]
pub struct Output {
    pub name: String,
    #[serde(default)]
    pub parameters: Params,
}

/// The parameters vqad reads (the binary tensor data extension's); others are skipped.
#[derive(Deserialize, Default)]
pub struct Params {
    pub binary_data_size: Option<u64>,
    pub binary_data: Option<bool>,
    pub binary_data_output: Option<bool>,
}

/// A JSON list of at most `N` items; a longer one is refused as it is read.
pub struct Bounded<T, const N: usize>(pub Vec<T>);

impl<'de, T: Deserialize<'de>, const N: usize> Deserialize<'de> for Bounded<T, N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T, const N: usize>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for V<T, N> {
            type Value = Bounded<T, N>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a list of at most {N} items")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut v = Vec::new();
                while let Some(x) = seq.next_element()? {
                    if v.len() == N {
                        return Err(de::Error::custom(format!("a list of more than {N} items")));
                    }
                    v.push(x);
                }
                Ok(Bounded(v))
            }
        }
        d.deserialize_seq(V(PhantomData))
    }
}

/// Tensor data: nested JSON arrays flattened in row-major order.
#[derive(Default)]
pub struct Data {
    pub numbers: Vec<f32>,
    pub strings: Vec<Vec<u8>>,
    /// Booleans, nulls or objects seen (no accepted datatype has them).
    pub others: usize,
}

impl<'de> Deserialize<'de> for Data {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut data = Data::default();
        Flatten(&mut data).deserialize(d)?;
        Ok(data)
    }
}

/// Adds one JSON value (a scalar, or an array of them, nested) to the data.
struct Flatten<'a>(&'a mut Data);

impl<'de> DeserializeSeed<'de> for Flatten<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Flatten<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("numbers or strings, possibly in nested arrays")
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.0.numbers.push(v as f32);
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.visit_f64(v as f64)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.visit_f64(v as f64)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        if self.0.strings.len() == MAX_ELEMENTS {
            return Err(E::custom(format!("more than {MAX_ELEMENTS} string elements")));
        }
        self.0.strings.push(v.as_bytes().to_vec());
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.0.others += 1;
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.0.others += 1;
        Ok(())
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while map.next_entry::<de::IgnoredAny, de::IgnoredAny>()?.is_some() {}
        self.0.others += 1;
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Flatten(self.0))?.is_some() {}
        Ok(())
    }
}
