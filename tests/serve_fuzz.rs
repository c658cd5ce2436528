//! `vqad serve`'s request path under a mutation fuzzer (tests/common_reqfuzz): 20,000+ hostile
//! requests — damaged PNG/JPEG/BMP/TIFF files, lying BYTES counts and lengths, lying binary
//! extension headers, NaN and infinite FP32 tensors, hostile JSON and protobuf structure —
//! through parsing, input checks and decoding. None may panic, none of a must-refuse kind may
//! be accepted, every accepted one must give finite model-ready arrays, and none may allocate
//! more than the server charges it to its memory budget. A longer run:
//! `cargo run --release --example fuzz_requests -- --inputs 1000000`.

mod common_reqfuzz;

use common_reqfuzz::{common_bombs, run_one, Outcome, Request};
use vqad::serve::ErrorKind;

#[test]
fn twenty_thousand_hostile_requests_are_refused_or_decoded_within_their_memory_charge() {
    let per_op = 750;
    let n = per_op * common_reqfuzz::OPERATORS.len() as u64;
    let t0 = std::time::Instant::now();
    let stats = common_reqfuzz::run(20261205, n);
    let report = stats.report();
    eprintln!("{report}in {:.1} s", t0.elapsed().as_secs_f64());
    assert!(stats.inputs >= 20_000, "{report}");
    assert!(stats.panics.is_empty(), "the request path panicked:\n{report}");
    assert!(stats.accepted_bad.is_empty(), "malformed requests were accepted:\n{report}");
    assert!(stats.bad_output.is_empty(), "accepted requests gave malformed arrays:\n{report}");
    assert!(stats.over_budget.is_empty(), "requests allocated more than they are charged:\n{report}");
    assert!(stats.unclear.is_empty(), "refusals without a clear client error:\n{report}");
    for &(op, must) in common_reqfuzz::OPERATORS {
        let (ran, refused) = stats.per_operator.get(op).copied().unwrap_or_default();
        assert_eq!(ran, per_op, "operator {op}:\n{report}");
        if must {
            assert_eq!(refused, ran, "operator {op}:\n{report}");
        }
    }
    // The byte-level operators are not all refused (a flipped bit in JPEG scan data is still
    // an image), and not all accepted: the fuzzer reaches both the decoders and their errors.
    for op in ["img_bit_flip", "img_truncate", "png_field_crc_fixed", "tiff_ifd", "bmp_header", "jpeg_segment"] {
        let (ran, refused) = stats.per_operator[op];
        assert!(refused > 0 && refused < ran, "{op}: {refused} of {ran} refused:\n{report}");
    }
}

#[test]
fn the_same_seed_gives_the_same_requests() {
    use rand::SeedableRng;
    let seeds = common_reqfuzz::Seeds::new();
    let mut a = rand_chacha::ChaCha20Rng::seed_from_u64(9);
    let mut b = rand_chacha::ChaCha20Rng::seed_from_u64(9);
    for (i, &(op, _)) in common_reqfuzz::OPERATORS.iter().enumerate() {
        let x = common_reqfuzz::mutate(op, &seeds, &mut a, i as u64);
        let y = common_reqfuzz::mutate(op, &seeds, &mut b, i as u64);
        assert_eq!(format!("{x:?}"), format!("{y:?}"), "{op}");
    }
}

#[test]
fn twenty_thousand_pixel_bombs_cost_their_bytes_and_nothing_more() {
    for f in common_bombs::FORMATS {
        let bomb = common_bombs::bomb(f, 20000, 20000);
        for way in 0..3 {
            let req = common_reqfuzz::bytes_request(&[bomb.clone()], vec![1], way);
            let (outcome, peak, charged) = run_one(&req);
            match outcome {
                Outcome::Refused(ErrorKind::BadRequest, m) => assert!(m.contains("image is 20000×20000") && m.contains("over the limit"), "{f}: {m}"),
                other => panic!("{f} way {way}: {other:?}"),
            }
            // Refused from the header: what was allocated is the request's own bytes (parsed
            // copies, JPEG's input copy), never pixels.
            assert!(peak <= charged && peak < 2 * req.len() as u64 + (1 << 20), "{f} way {way}: peak {peak}, charged {charged}, {} bytes", req.len());
        }
    }
}

#[test]
fn large_legal_images_decode_within_their_charge() {
    // 2000 × 1500 noise in every format and several layouts: the header's estimate of what
    // decoding costs must cover what it really allocates.
    let noise = common_bombs::noise_png(2000, 1500, 3);
    let img = image::load_from_memory(&noise).unwrap();
    let enc = |i: image::DynamicImage, f: image::ImageFormat| {
        let mut out = std::io::Cursor::new(vec![]);
        i.write_to(&mut out, f).unwrap();
        out.into_inner()
    };
    let cases = [
        ("png rgb8", noise.clone()),
        ("png rgba16", enc(image::DynamicImage::ImageRgba16(img.to_rgba16()), image::ImageFormat::Png)),
        ("jpeg rgb", enc(img.clone(), image::ImageFormat::Jpeg)),
        ("jpeg gray", enc(image::DynamicImage::ImageLuma8(img.to_luma8()), image::ImageFormat::Jpeg)),
        ("bmp rgb", enc(img.clone(), image::ImageFormat::Bmp)),
        ("tiff rgb16", enc(image::DynamicImage::ImageRgb16(img.to_rgb16()), image::ImageFormat::Tiff)),
        ("tiff rgb32f", enc(image::DynamicImage::ImageRgb32F(img.to_rgb32f()), image::ImageFormat::Tiff)),
    ];
    for (what, bytes) in cases {
        let req = common_reqfuzz::bytes_request(&[bytes], vec![1], 0);
        let spec = vqad::serve::infer::InputSpec { limits: vqad::data::DecodeLimits::default(), ..common_reqfuzz::spec() };
        let Request::Http { body, header_len } = &req else { unreachable!() };
        let _ = header_len;
        let mut headers = http::HeaderMap::new();
        headers.insert(vqad::serve::http::HEADER_LENGTH, http::HeaderValue::from_str(header_len.as_ref().unwrap()).unwrap());
        let body = bytes::Bytes::from(body.clone());
        let ((charged, n), peak) = common_reqfuzz::measure(|| {
            let call = vqad::serve::http::parse_infer(body, &headers, "m".into(), String::new()).unwrap().0;
            let plan = vqad::serve::infer::plan_inputs(call.inputs, spec).unwrap();
            let charged = plan.decode_bytes();
            (charged, plan.decode().unwrap().len())
        });
        eprintln!("{what}: peak {:.1} MiB, charged {:.1} MiB", peak as f64 / 1048576.0, charged as f64 / 1048576.0);
        assert_eq!(n, 1);
        assert!(peak <= charged, "{what}: decoding allocated {peak} bytes, the plan charged {charged}");
    }
}

/// One input of a run, to look at what a run reported:
/// `I=656 SEED=20261205 cargo test --release --test serve_fuzz replay -- --ignored --nocapture`
/// (with `SAVE=file`, also writes the request body or protobuf message there).
#[test]
#[ignore]
fn replay() {
    let var = |k: &str, d: u64| std::env::var(k).ok().and_then(|v| v.parse().ok()).unwrap_or(d);
    let (op, req) = common_reqfuzz::replay(var("SEED", 20261205), var("I", 0));
    let (o, peak, charged) = run_one(&req);
    eprintln!("{op}: {o:?}; peak {peak} bytes, charged {charged}");
    if let Ok(path) = std::env::var("SAVE") {
        let bytes = match &req {
            Request::Http { body, .. } => body,
            Request::Grpc(b) => b,
        };
        std::fs::write(path, bytes).unwrap();
    }
}
