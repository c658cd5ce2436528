//! The verifier under a mutation fuzzer (tests/common_fuzz): 20,000+ mutants of a signed
//! package, each refused with an error — none accepted, none panicking — and every mutation
//! operator exercised. A longer run: `cargo run --release --example fuzz_verifier -- --mutants 1000000`.

mod common_fuzz;

#[test]
fn twenty_thousand_mutants_are_all_refused_without_a_panic() {
    let n = 20_150; // 650 per operator
    let t0 = std::time::Instant::now();
    let stats = common_fuzz::run(20261129, n);
    let report = stats.report();
    eprintln!("{report}in {:.1} s", t0.elapsed().as_secs_f64());
    assert!(stats.mutants >= 20_000, "{report}");
    assert!(stats.panics.is_empty(), "the verifier panicked:\n{report}");
    assert!(stats.accepted.is_empty(), "the verifier accepted mutants:\n{report}");
    for op in common_fuzz::OPERATORS {
        let (ran, refused) = stats.per_operator.get(op).copied().unwrap_or_default();
        assert!(ran > 0 && refused == ran, "operator {op} ran {ran} times, {refused} refused:\n{report}");
    }
    // The refusals are not all one check: structure, signature and content checks all fired.
    for kind in ["Truncated", "LocalHeaderMismatch", "DigestMismatch", "WrongKey", "DuplicateEntry", "PathTraversal", "AbsolutePath", "NonCanonical"] {
        assert!(stats.per_error.get(kind).copied().unwrap_or(0) > 0, "no mutant was refused as {kind}:\n{report}");
    }
}

#[test]
fn the_same_seed_gives_the_same_mutants() {
    let t = common_fuzz::Target::new(3);
    let u = common_fuzz::Target::new(3);
    assert_eq!(t.bytes, u.bytes);
    use rand::SeedableRng;
    let mut a = rand_chacha::ChaCha20Rng::seed_from_u64(9);
    let mut b = rand_chacha::ChaCha20Rng::seed_from_u64(9);
    for op in common_fuzz::OPERATORS {
        assert_eq!(common_fuzz::mutate(op, &t, &mut a), common_fuzz::mutate(op, &u, &mut b), "{op}");
    }
}
