//! TEMPORARY type-check shim until the data branch merges.
#![allow(unused)]
use std::path::{Path, PathBuf};
use crate::config::CategoryKind;
#[derive(Debug, thiserror::Error)]
pub enum DataError { #[error("x")] X }
pub struct Category { pub root: PathBuf, pub name: String, pub train_good: Vec<PathBuf>, pub test: Vec<TestItem> }
pub struct TestItem { pub path: PathBuf, pub defect: String, pub mask: Option<PathBuf> }
impl Category { pub fn open(dir: &Path) -> Result<Category, DataError> { todo!() } pub fn open_train_only(dir:&Path) -> Result<Category, DataError> { todo!() } pub fn kind(&self, configured: Option<CategoryKind>) -> CategoryKind { todo!() } }
pub fn split_validation(paths: &[PathBuf], fraction: f64) -> (Vec<PathBuf>, Vec<PathBuf>) { todo!() }
pub fn load_many(paths: &[PathBuf], channels: usize, size: usize) -> (Vec<(PathBuf, ndarray::Array3<f32>)>, Vec<(PathBuf, DataError)>) { todo!() }
pub fn dataset_digest(root: &Path, files: &[PathBuf]) -> Result<String, DataError> { todo!() }
pub struct Augmenter;
impl Augmenter { pub fn new(kind: CategoryKind, category_name: &str, seed: u64) -> Self { todo!() } pub fn apply(&mut self, img: &ndarray::Array3<f32>, mask: Option<&ndarray::Array2<u8>>) -> (ndarray::Array3<f32>, Option<ndarray::Array2<u8>>) { todo!() } }
