//! Long runs of the request-path fuzzer (the CI test runs 20,250 inputs):
//!
//! ```sh
//! cargo run --release --example fuzz_requests -- --inputs 1000000 --seed 7
//! ```
//!
//! Prints counts per operator and per refusal kind; exits 1 if any input panicked, a
//! must-refuse input was accepted, an accepted one gave malformed arrays, one allocated more
//! than the server charges it, or a refusal was not a clear client error. `--save DIR` keeps
//! the accepted must-refuse inputs.

#[path = "../tests/common_reqfuzz/mod.rs"]
mod common_reqfuzz;

fn main() {
    let mut inputs: u64 = 100_000;
    let mut seed: u64 = 7;
    let mut save: Option<std::path::PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().unwrap_or_else(|| usage(&format!("{a} needs a value")));
        match a.as_str() {
            "--inputs" => inputs = val().parse().unwrap_or_else(|_| usage("--inputs takes a number")),
            "--seed" => seed = val().parse().unwrap_or_else(|_| usage("--seed takes a number")),
            "--save" => save = Some(val().into()),
            "-h" | "--help" => usage(""),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    let t0 = std::time::Instant::now();
    let stats = common_reqfuzz::run(seed, inputs);
    print!("{}", stats.report());
    println!("seed {seed}, {:.1} s", t0.elapsed().as_secs_f64());
    if let Some(dir) = save {
        std::fs::create_dir_all(&dir).expect("create --save folder");
        for (op, i, req) in &stats.accepted_bad {
            let (name, bytes) = match req {
                common_reqfuzz::Request::Http { body, header_len } => (format!("accepted-{i}-{op}-http-{}.bin", header_len.clone().unwrap_or_default()), body.clone()),
                common_reqfuzz::Request::Grpc(b) => (format!("accepted-{i}-{op}-grpc.bin"), b.clone()),
            };
            std::fs::write(dir.join(name), bytes).expect("write input");
        }
    }
    if !stats.clean() {
        std::process::exit(1);
    }
}

fn usage(msg: &str) -> ! {
    if !msg.is_empty() {
        eprintln!("fuzz_requests: {msg}");
    }
    eprintln!("usage: fuzz_requests [--inputs N] [--seed S] [--save DIR]");
    std::process::exit(2);
}
