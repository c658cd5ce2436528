//! MVTec layout, errors on broken folders, validation split, category check, dataset digest.

use image::{DynamicImage, ImageBuffer, Luma, Rgb};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use vqad::config::CategoryKind;
use vqad::data::*;

fn png(path: &Path, w: u32, h: u32, v: u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    DynamicImage::ImageRgb8(ImageBuffer::from_pixel(w, h, Rgb([v, v / 2, 255 - v])))
        .save(path)
        .unwrap();
}

fn mask(path: &Path, w: u32, h: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    DynamicImage::ImageLuma8(ImageBuffer::from_fn(w, h, |x, _| {
        Luma([if x < 2 { 255 } else { 0 }])
    }))
    .save(path)
    .unwrap();
}

/// A small valid category: 4 train, test good ×2, crack ×2, dent ×1, all masks present.
fn make_category(root: &Path) -> PathBuf {
    let c = root.join("carpet");
    for i in 0..4 {
        png(&c.join(format!("train/good/{i:03}.png")), 16, 16, i * 10);
    }
    for i in 0..2 {
        png(&c.join(format!("test/good/{i:03}.png")), 16, 16, 100);
        png(&c.join(format!("test/crack/{i:03}.png")), 16, 16, 200);
        mask(
            &c.join(format!("ground_truth/crack/{i:03}_mask.png")),
            16,
            16,
        );
    }
    png(&c.join("test/dent/000.png"), 16, 16, 50);
    mask(&c.join("ground_truth/dent/000_mask.png"), 16, 16);
    c
}

#[test]
fn open_lists_train_and_test_with_masks() {
    let d = tempfile::tempdir().unwrap();
    let c = make_category(d.path());
    let cat = Category::open(&c).unwrap();
    assert_eq!(cat.name, "carpet");
    assert_eq!(cat.train_good.len(), 4);
    assert!(cat.train_good.windows(2).all(|w| w[0] < w[1]));
    let summary: Vec<(String, String, bool)> = cat
        .test
        .iter()
        .map(|t| {
            (
                t.defect.clone(),
                t.path.file_name().unwrap().to_string_lossy().into_owned(),
                t.mask.is_some(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("crack", "000.png", true),
            ("crack", "001.png", true),
            ("dent", "000.png", true),
            ("good", "000.png", false),
            ("good", "001.png", false)
        ]
        .map(|(a, b, m)| (a.to_string(), b.to_string(), m))
    );
    assert_eq!(
        cat.test[1].mask.as_deref(),
        Some(c.join("ground_truth/crack/001_mask.png").as_path())
    );
    assert_eq!(cat.defect_types(), ["crack", "dent"]);
    // Train-only needs no test folder.
    std::fs::remove_dir_all(c.join("test")).unwrap();
    assert_eq!(Category::open_train_only(&c).unwrap().train_good.len(), 4);
    assert!(matches!(Category::open(&c), Err(DataError::Layout { .. })));
}

#[test]
fn missing_mask_error_names_the_image() {
    let d = tempfile::tempdir().unwrap();
    let c = make_category(d.path());
    std::fs::remove_file(c.join("ground_truth/crack/001_mask.png")).unwrap();
    let e = Category::open(&c).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, DataError::MissingMask { .. }), "{e:?}");
    assert!(
        msg.contains("test/crack/001.png") && msg.contains("001_mask.png"),
        "{msg}"
    );
}

#[test]
fn empty_train_good_is_an_error_naming_the_folder() {
    let d = tempfile::tempdir().unwrap();
    let c = make_category(d.path());
    for p in list_images(&c.join("train/good")).unwrap() {
        std::fs::remove_file(p).unwrap();
    }
    std::fs::write(c.join("train/good/readme.txt"), "no images here").unwrap();
    let e = Category::open_train_only(&c).unwrap_err();
    assert!(matches!(e, DataError::EmptyTrain { .. }), "{e:?}");
    assert!(e.to_string().contains("train/good"), "{e}");
    // And a folder without train/good at all says so.
    std::fs::remove_dir_all(c.join("train")).unwrap();
    let e = Category::open(&c).unwrap_err();
    assert!(
        e.to_string().contains("carpet") && e.to_string().contains("train/good"),
        "{e}"
    );
    assert!(Category::open(&d.path().join("nope"))
        .unwrap_err()
        .to_string()
        .contains("nope"));
}

#[test]
fn kind_from_mvtec_name_config_or_default() {
    for t in ["carpet", "grid", "leather", "tile", "wood", "Carpet"] {
        assert_eq!(kind_from_name(t), Some(CategoryKind::Texture), "{t}");
    }
    for o in MVTEC_OBJECTS
        .iter()
        .copied()
        .chain(["metal nut", "Metal-Nut"])
    {
        assert_eq!(kind_from_name(o), Some(CategoryKind::Object), "{o}");
    }
    assert_eq!(kind_from_name("widgets"), None);
    let d = tempfile::tempdir().unwrap();
    let cat = Category::open(&make_category(d.path())).unwrap();
    assert_eq!(cat.kind(None), CategoryKind::Texture);
    assert_eq!(
        cat.kind(Some(CategoryKind::Object)),
        CategoryKind::Object,
        "config wins"
    );
    let mut other = cat.clone();
    other.name = "widgets".into();
    assert_eq!(
        other.kind(None),
        CategoryKind::Object,
        "unknown names default to object"
    );
}

fn names(n: usize) -> Vec<PathBuf> {
    (0..n)
        .map(|i| PathBuf::from(format!("/data/cat/train/good/{i:03}.png")))
        .collect()
}

#[test]
fn validation_split_is_deterministic_order_and_location_independent() {
    let paths = names(50);
    let (train, val) = split_validation(&paths, 0.2);
    assert_eq!(val.len(), 10);
    assert_eq!(train.len(), 40);
    let mut all: Vec<PathBuf> = train.iter().chain(&val).cloned().collect();
    all.sort();
    assert_eq!(all, paths, "a partition of the input");
    assert_eq!(split_validation(&paths, 0.2), (train.clone(), val.clone()));
    let mut rev = paths.clone();
    rev.reverse();
    rev.swap(3, 17);
    assert_eq!(
        split_validation(&rev, 0.2),
        (train.clone(), val.clone()),
        "input order does not matter"
    );
    // Same file names elsewhere: same selection.
    let moved: Vec<PathBuf> = paths
        .iter()
        .map(|p| Path::new("/elsewhere").join(p.file_name().unwrap()))
        .collect();
    let (_, val2) = split_validation(&moved, 0.2);
    let n = |v: &[PathBuf]| {
        v.iter()
            .map(|p| p.file_name().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(n(&val2), n(&val));
    // Not simply the first or last files.
    assert_ne!(val, paths[..10].to_vec());
    assert_ne!(val, paths[40..].to_vec());
}

#[test]
fn validation_split_edge_cases() {
    assert_eq!(
        split_validation(&names(20), 0.01).1.len(),
        1,
        "at least one when fraction > 0"
    );
    assert_eq!(split_validation(&names(20), 0.0).1.len(), 0);
    assert_eq!(split_validation(&names(20), f64::NAN).1.len(), 0);
    assert_eq!(
        split_validation(&names(1), 0.5),
        (names(1), vec![]),
        "a single image stays in train"
    );
    assert_eq!(
        split_validation(&names(3), 1.0).0.len(),
        1,
        "training keeps one"
    );
    assert_eq!(split_validation(&[], 0.3), (vec![], vec![]));
}

#[test]
fn check_reports_a_good_category() {
    let d = tempfile::tempdir().unwrap();
    let c = make_category(d.path());
    let r = check_category(&c).unwrap();
    assert!(!r.has_problems(), "{r}");
    assert_eq!(r.train_good, 4);
    assert_eq!(r.test.get("good"), Some(&2));
    assert_eq!(r.test.get("crack"), Some(&2));
    assert_eq!(r.test.get("dent"), Some(&1));
    assert_eq!(r.masks, 3);
    assert_eq!(r.image_sizes.get("16x16"), Some(&9));
    assert_eq!(r.channels.get("3"), Some(&9));
    assert_eq!(r.kind, Some(CategoryKind::Texture));
    let text = r.to_string();
    assert!(
        text.contains("carpet") && text.contains("problems: none") && text.contains("crack: 2"),
        "{text}"
    );
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["train_good"], 4);
    assert_eq!(json["problems"].as_array().unwrap().len(), 0);
}

#[test]
fn check_lists_every_problem_of_a_broken_category() {
    let d = tempfile::tempdir().unwrap();
    let c = make_category(d.path());
    std::fs::remove_file(c.join("ground_truth/crack/001_mask.png")).unwrap(); // missing mask
    std::fs::write(c.join("test/good/001.png"), b"not a png").unwrap(); // unreadable
    mask(&c.join("ground_truth/dent/000_mask.png"), 8, 8); // size differs from 16×16
    mask(&c.join("ground_truth/dent/009_mask.png"), 16, 16); // no test image 009
    DynamicImage::ImageLuma8(ImageBuffer::from_pixel(16, 16, Luma([128])))
        .save(c.join("ground_truth/crack/000_mask.png"))
        .unwrap();
    std::fs::write(c.join("train/good/notes.txt"), "x").unwrap(); // unknown file
    std::fs::create_dir_all(c.join("extras")).unwrap(); // unknown folder

    let r = check_category(&c).unwrap();
    assert!(r.has_problems());
    let has = |kind: ProblemKind, path: &str| {
        r.problems
            .iter()
            .any(|p| p.kind == kind && p.path == c.join(path))
    };
    assert!(has(ProblemKind::MissingMask, "test/crack/001.png"), "{r}");
    assert!(has(ProblemKind::Unreadable, "test/good/001.png"), "{r}");
    assert!(
        has(
            ProblemKind::MaskSizeMismatch,
            "ground_truth/dent/000_mask.png"
        ),
        "{r}"
    );
    assert!(
        has(ProblemKind::OrphanMask, "ground_truth/dent/009_mask.png"),
        "{r}"
    );
    assert!(
        has(
            ProblemKind::MaskNotBinary,
            "ground_truth/crack/000_mask.png"
        ),
        "{r}"
    );
    assert!(has(ProblemKind::UnknownFile, "train/good/notes.txt"), "{r}");
    assert!(has(ProblemKind::UnknownFile, "extras"), "{r}");
    assert_eq!(r.problems.len(), 7, "{r}");
    let unreadable = r
        .problems
        .iter()
        .find(|p| p.kind == ProblemKind::Unreadable)
        .unwrap();
    assert!(
        unreadable.detail.contains("cannot decode"),
        "{}",
        unreadable.detail
    );
    let text = r.to_string();
    assert!(
        text.contains("missing mask") && text.contains("001.png") && text.contains("problems: 7"),
        "{text}"
    );
    let json = serde_json::to_string(&r).unwrap();
    assert!(
        json.contains("\"missing_mask\"") && json.contains("\"orphan_mask\""),
        "{json}"
    );
    // The readable images are still counted.
    assert_eq!(r.test.get("good"), Some(&2));
    assert_eq!(r.image_sizes.get("16x16"), Some(&8));
}

#[test]
fn check_reports_missing_and_empty_training_folders() {
    let d = tempfile::tempdir().unwrap();
    let c = d.path().join("thing");
    std::fs::create_dir_all(c.join("train/good")).unwrap();
    let r = check_category(&c).unwrap();
    assert!(
        r.problems
            .iter()
            .any(|p| p.kind == ProblemKind::EmptyTrain && p.path == c.join("train/good")),
        "{r}"
    );
    assert!(
        r.problems
            .iter()
            .any(|p| p.kind == ProblemKind::MissingFolder && p.path == c.join("test")),
        "{r}"
    );
    std::fs::remove_dir_all(c.join("train")).unwrap();
    let r = check_category(&c).unwrap();
    assert!(
        r.problems
            .iter()
            .any(|p| p.kind == ProblemKind::MissingFolder && p.path == c.join("train/good")),
        "{r}"
    );
    assert!(check_category(&d.path().join("absent"))
        .unwrap_err()
        .to_string()
        .contains("absent"));
}

/// The digest exactly as its documentation defines it.
fn reference_digest(entries: &[(&str, &[u8])]) -> String {
    let mut sorted = entries.to_vec();
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut h = Sha256::new();
    for (p, data) in sorted {
        h.update(p.as_bytes());
        h.update([0u8]);
        h.update((data.len() as u64).to_le_bytes());
        h.update(data);
    }
    hex::encode(h.finalize())
}

#[test]
fn dataset_digest_follows_its_definition() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("cat");
    std::fs::create_dir_all(root.join("train/good")).unwrap();
    std::fs::write(root.join("train/good/b.png"), b"BBBB").unwrap();
    std::fs::write(root.join("train/good/a.png"), b"AA").unwrap();
    std::fs::write(root.join("z.txt"), b"").unwrap();
    let files = vec![
        root.join("train/good/b.png"),
        root.join("z.txt"),
        root.join("train/good/a.png"),
    ];
    let got = dataset_digest(&root, &files).unwrap();
    let want = reference_digest(&[
        ("train/good/a.png", b"AA"),
        ("train/good/b.png", b"BBBB"),
        ("z.txt", b""),
    ]);
    assert_eq!(got, want);
    assert_eq!(got.len(), 64);

    // Order, relative spelling and duplicates do not matter.
    let rel = vec![
        PathBuf::from("z.txt"),
        PathBuf::from("train/good/a.png"),
        root.join("train/good/b.png"),
        PathBuf::from("z.txt"),
    ];
    assert_eq!(dataset_digest(&root, &rel).unwrap(), got);
    // Moving the dataset does not change it.
    let moved = d.path().join("moved");
    std::fs::rename(&root, &moved).unwrap();
    let files2: Vec<PathBuf> = files
        .iter()
        .map(|p| moved.join(p.strip_prefix(&root).unwrap()))
        .collect();
    assert_eq!(dataset_digest(&moved, &files2).unwrap(), got);
    // One byte changed, or a renamed file, changes it.
    std::fs::write(moved.join("train/good/a.png"), b"AB").unwrap();
    assert_ne!(dataset_digest(&moved, &files2).unwrap(), got);
    std::fs::write(moved.join("train/good/a.png"), b"AA").unwrap();
    std::fs::rename(moved.join("z.txt"), moved.join("y.txt")).unwrap();
    let files3 = vec![
        moved.join("train/good/b.png"),
        moved.join("y.txt"),
        moved.join("train/good/a.png"),
    ];
    assert_ne!(dataset_digest(&moved, &files3).unwrap(), got);
}

#[test]
fn dataset_digest_rejects_paths_outside_the_root_and_names_missing_files() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("cat");
    std::fs::create_dir_all(&root).unwrap();
    let e = dataset_digest(&root, &[d.path().join("other.png")]).unwrap_err();
    assert!(e.to_string().contains("other.png"), "{e}");
    assert!(dataset_digest(&root, &[PathBuf::from("../escape.png")]).is_err());
    let e = dataset_digest(&root, &[root.join("gone.png")]).unwrap_err();
    assert!(e.to_string().contains("gone.png"), "{e}");
    assert_eq!(dataset_digest(&root, &[]).unwrap(), reference_digest(&[]));
}

#[cfg(unix)]
#[test]
fn dataset_digest_resolves_a_linked_root() {
    let d = tempfile::tempdir().unwrap();
    let real = d.path().join("real");
    std::fs::create_dir_all(real.join("train/good")).unwrap();
    std::fs::write(real.join("train/good/a.png"), b"AA").unwrap();
    let link = d.path().join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let want = reference_digest(&[("train/good/a.png", b"AA")]);
    assert_eq!(
        dataset_digest(&link, &[real.join("train/good/a.png")]).unwrap(),
        want
    );
    assert_eq!(
        dataset_digest(&real, &[link.join("train/good/a.png")]).unwrap(),
        want
    );
}
