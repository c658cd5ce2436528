//! Writes decompression bombs (small valid files declaring huge images) for
//! `tools/bench-hostile.sh`:
//!
//! ```sh
//! cargo run --release --example image_bombs -- OUT_DIR [--side 20000] [--noise SIDE]
//! ```
//!
//! `OUT_DIR/bomb.{png,jpg,bmp,tif}`, each `side × side`; with `--noise SIDE` also
//! `OUT_DIR/noise.png`, an incompressible RGB image of that side (a large but legal frame).

#[path = "../tests/common_bombs/mod.rs"]
mod common_bombs;

fn main() {
    let mut args = std::env::args().skip(1);
    let mut out: Option<std::path::PathBuf> = None;
    let (mut side, mut noise) = (20000u32, None);
    while let Some(a) = args.next() {
        let mut val = || args.next().and_then(|v| v.parse::<u32>().ok()).unwrap_or_else(|| usage(&format!("{a} takes a number")));
        match a.as_str() {
            "--side" => side = val(),
            "--noise" => noise = Some(val()),
            "-h" | "--help" => usage(""),
            s if !s.starts_with('-') && out.is_none() => out = Some(s.into()),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    let out = out.unwrap_or_else(|| usage("OUT_DIR is required"));
    std::fs::create_dir_all(&out).expect("create OUT_DIR");
    for f in common_bombs::FORMATS {
        let p = out.join(format!("bomb.{f}"));
        let b = common_bombs::bomb(f, side, side);
        std::fs::write(&p, &b).expect("write bomb");
        println!("{} {} bytes, {side}×{side}", p.display(), b.len());
    }
    if let Some(n) = noise {
        let p = out.join("noise.png");
        let b = common_bombs::noise_png(n, n, 1);
        std::fs::write(&p, &b).expect("write noise");
        println!("{} {} bytes, {n}×{n}", p.display(), b.len());
    }
}

fn usage(msg: &str) -> ! {
    if !msg.is_empty() {
        eprintln!("image_bombs: {msg}");
    }
    eprintln!("usage: image_bombs OUT_DIR [--side 20000] [--noise SIDE]");
    std::process::exit(2);
}
