fn main() {
    for f in std::env::args().skip(1) {
        let p = config::load_file(std::path::Path::new(&f)).unwrap();
        for d in &p.diagnostics {
            println!("{d}");
        }
        if let Some(c) = &p.config {
            println!("{}", config::render_text(c));
        }
    }
}
