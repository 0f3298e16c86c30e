//! Writes the WebSocket protocol's JSON Schema files into `schemas/json/`.
fn main() -> std::io::Result<()> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("json");
    std::fs::create_dir_all(&dir)?;
    for (name, schema) in chatstream_schemas::ws::json_schemas() {
        let text = serde_json::to_string_pretty(&schema).expect("schema serializes") + "\n";
        std::fs::write(dir.join(name), text)?;
        println!("wrote schemas/json/{name}");
    }
    Ok(())
}
