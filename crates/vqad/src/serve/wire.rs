//! Counts a gRPC request's repeated fields on the protobuf wire before prost decodes it.
//!
//! Why: prost allocates per element. An empty repeated message or bytes element is two bytes
//! on the wire and 24 to 150 in memory, so a 64 MiB `ModelInferRequest` of empty inputs
//! would take gigabytes while decoding, before any check could run. Walking the wire format
//! costs nothing, and with the counts capped (`infer::MAX_*`) what decoding allocates stays
//! within the message's size plus a fixed amount.

use super::infer::{MAX_DIMS, MAX_ELEMENTS, MAX_PARAMETERS, MAX_TENSORS};

/// Largest message of any other request (they carry names and a few parameters).
pub const MAX_SMALL_MESSAGE: usize = 64 << 10;

/// One field: its number, wire type and, for length-delimited fields, its bytes.
struct Field<'a> {
    number: u64,
    wire: u8,
    payload: &'a [u8],
}

fn varint(b: &[u8], i: &mut usize) -> Result<u64, String> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*i).ok_or("a varint runs past the end")?;
        *i += 1;
        v |= ((byte & 0x7f) as u64) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err("a varint is longer than 10 bytes".into())
}

/// Walks the top-level fields of one message.
fn fields(b: &[u8], mut f: impl FnMut(Field) -> Result<(), String>) -> Result<(), String> {
    let mut i = 0;
    while i < b.len() {
        let key = varint(b, &mut i)?;
        let (number, wire) = (key >> 3, (key & 7) as u8);
        if number == 0 {
            return Err("field number 0".into());
        }
        let start = i;
        match wire {
            0 => {
                varint(b, &mut i)?;
            }
            1 => i = i.checked_add(8).filter(|&e| e <= b.len()).ok_or("a fixed64 runs past the end")?,
            5 => i = i.checked_add(4).filter(|&e| e <= b.len()).ok_or("a fixed32 runs past the end")?,
            2 => {
                let n = varint(b, &mut i)?;
                let end = usize::try_from(n).ok().and_then(|n| i.checked_add(n)).filter(|&e| e <= b.len()).ok_or("a length-delimited field runs past the end")?;
                let payload = &b[i..end];
                i = end;
                f(Field { number, wire, payload })?;
                continue;
            }
            w => return Err(format!("wire type {w} (groups are not used by this protocol)")),
        }
        f(Field { number, wire, payload: &b[start..i] })?;
    }
    Ok(())
}

fn cap(n: &mut usize, max: usize, what: &str) -> Result<(), String> {
    *n += 1;
    if *n > max {
        return Err(format!("more than {max} {what}"));
    }
    Ok(())
}

/// Checks a `ModelInferRequest`'s counts: inputs, outputs and raw contents at most
/// [`MAX_TENSORS`], parameters per map at most [`MAX_PARAMETERS`], dimensions per shape at
/// most [`MAX_DIMS`], BYTES elements at most [`MAX_ELEMENTS`] in all, and no typed contents of
/// datatypes no input takes.
pub fn check_infer_request(b: &[u8]) -> Result<(), String> {
    let (mut params, mut inputs, mut outputs, mut raw, mut elements) = (0, 0, 0, 0, 0);
    fields(b, |f| {
        match (f.number, f.wire) {
            (4, 2) => cap(&mut params, MAX_PARAMETERS, "request parameters"),
            (5, 2) => {
                cap(&mut inputs, MAX_TENSORS, "inputs")?;
                check_input(f.payload, &mut elements)
            }
            (6, 2) => {
                cap(&mut outputs, MAX_TENSORS, "outputs")?;
                let mut p = 0;
                fields(f.payload, |g| if (g.number, g.wire) == (2, 2) { cap(&mut p, MAX_PARAMETERS, "output parameters") } else { Ok(()) })
            }
            (7, 2) => cap(&mut raw, MAX_TENSORS, "raw_input_contents"),
            _ => Ok(()),
        }
    })
}

fn check_input(b: &[u8], elements: &mut usize) -> Result<(), String> {
    let (mut dims, mut params) = (0, 0);
    fields(b, |f| match (f.number, f.wire) {
        (3, 0) => cap(&mut dims, MAX_DIMS, "dimensions in a shape"),
        (3, 2) => {
            let mut i = 0;
            while i < f.payload.len() {
                varint(f.payload, &mut i)?;
                cap(&mut dims, MAX_DIMS, "dimensions in a shape")?;
            }
            Ok(())
        }
        (4, 2) => cap(&mut params, MAX_PARAMETERS, "input parameters"),
        (5, 2) => fields(f.payload, |c| match c.number {
            6 => Ok(()),
            8 => cap(elements, MAX_ELEMENTS, "BYTES elements"),
            1..=5 | 7 => Err(format!("typed contents in field {} (only fp32_contents and bytes_contents are accepted)", c.number)),
            _ => Ok(()),
        }),
        _ => Ok(()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serve::proto::*;
    use prost::Message;

    fn input(shape: Vec<i64>) -> InferInputTensor {
        InferInputTensor { name: "image".into(), datatype: "BYTES".into(), shape, parameters: Default::default(), contents: None }
    }

    #[test]
    fn a_genuine_request_passes_and_counts_past_the_caps_are_refused() {
        let ok = ModelInferRequest { inputs: vec![input(vec![2])], raw_input_contents: vec![vec![1, 2, 3]], ..Default::default() };
        check_infer_request(&ok.encode_to_vec()).unwrap();
        let many = ModelInferRequest { inputs: (0..MAX_TENSORS + 1).map(|_| input(vec![1])).collect(), ..Default::default() };
        assert!(check_infer_request(&many.encode_to_vec()).unwrap_err().contains("inputs"));
        let dims = ModelInferRequest { inputs: vec![input(vec![1; MAX_DIMS + 1])], ..Default::default() };
        assert!(check_infer_request(&dims.encode_to_vec()).unwrap_err().contains("dimensions"));
        let mut t = input(vec![1]);
        t.contents = Some(InferTensorContents { bytes_contents: vec![vec![]; MAX_ELEMENTS + 1], ..Default::default() });
        let elems = ModelInferRequest { inputs: vec![t], ..Default::default() };
        assert!(check_infer_request(&elems.encode_to_vec()).unwrap_err().contains("BYTES elements"));
        let mut t = input(vec![1]);
        t.contents = Some(InferTensorContents { int64_contents: vec![1], ..Default::default() });
        let typed = ModelInferRequest { inputs: vec![t], ..Default::default() };
        assert!(check_infer_request(&typed.encode_to_vec()).unwrap_err().contains("typed contents"));
    }

    #[test]
    fn truncated_and_malformed_wire_data_is_refused() {
        let ok = ModelInferRequest { model_name: "m".into(), inputs: vec![input(vec![2])], ..Default::default() }.encode_to_vec();
        for n in 1..ok.len() {
            // Every cut either ends on a field boundary (fine to walk) or is refused; none panics.
            let _ = check_infer_request(&ok[..n]);
        }
        assert!(check_infer_request(&[0x2a, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
        assert!(check_infer_request(&[0x0b]).is_err(), "group start");
    }
}
