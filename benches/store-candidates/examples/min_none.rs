//! Baseline for the binary size comparison: no store at all.
fn main() {
    let dir = std::env::temp_dir().join(format!("min-none-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("db"), [1u8]).unwrap();
    println!("{}", std::fs::read(dir.join("db")).unwrap().len());
    std::fs::remove_dir_all(dir).unwrap();
}
