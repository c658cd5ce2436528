//! Long runs of the verifier fuzzer (the CI test runs 20,000 mutants):
//!
//! ```sh
//! cargo run --release --example fuzz_verifier -- --mutants 1000000 --seed 7
//! ```
//!
//! Prints counts per mutation operator and per error kind; exits 1 if any mutant that changed
//! a signed byte was accepted or made the verifier panic. Accepted re-encodings (every signed
//! file and the signature byte-identical, only the deflate encoding differs) are counted
//! apart and do not fail the run. `--save DIR` keeps both kinds of accepted mutants.

#[path = "../tests/common_fuzz/mod.rs"]
mod common_fuzz;

fn main() {
    let mut mutants: u64 = 100_000;
    let mut seed: u64 = 7;
    let mut save: Option<std::path::PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| usage(&format!("{a} needs a value")));
        match a.as_str() {
            "--mutants" => mutants = val().parse().unwrap_or_else(|_| usage("--mutants takes a number")),
            "--seed" => seed = val().parse().unwrap_or_else(|_| usage("--seed takes a number")),
            "--save" => save = Some(val().into()),
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    let t0 = std::time::Instant::now();
    let stats = common_fuzz::run(seed, mutants);
    print!("{}", stats.report());
    println!("seed {seed}, {:.1} s", t0.elapsed().as_secs_f64());
    if let Some(dir) = save {
        std::fs::create_dir_all(&dir).expect("create --save folder");
        for (op, i, bytes) in &stats.accepted {
            std::fs::write(dir.join(format!("accepted-{i}-{op}.zip")), bytes).expect("write mutant");
        }
        for (op, i, bytes) in &stats.reencoded {
            std::fs::write(dir.join(format!("reencoded-{i}-{op}.zip")), bytes).expect("write mutant");
        }
    }
    if !stats.accepted.is_empty() || !stats.panics.is_empty() {
        std::process::exit(1);
    }
}

fn usage(msg: &str) -> ! {
    if !msg.is_empty() {
        eprintln!("fuzz_verifier: {msg}");
    }
    eprintln!("usage: fuzz_verifier [--mutants N] [--seed S] [--save DIR]");
    std::process::exit(2);
}
