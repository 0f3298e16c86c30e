//! `chatstream keygen`: a new API key and the tenants-file entry for it.
use clap::Args;

use chatstream_config::tenants::{generate_api_key, hash_api_key};

#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// Tenant the key is for (only used to print the file entry).
    #[arg(long, default_value = "my-tenant")]
    tenant: String,
    /// Name of the key, as it will appear in logs and events.
    #[arg(long, default_value = "default")]
    key_id: String,
}

pub fn run(args: KeygenArgs) -> anyhow::Result<()> {
    let key = generate_api_key();
    println!("API key (shown once, store it now): {key}");
    println!();
    println!("tenants file entry:");
    println!("tenants:");
    println!("  - id: {}", args.tenant);
    println!("    api_keys:");
    println!("      - id: {}", args.key_id);
    println!("        sha256: {}", hash_api_key(&key));
    Ok(())
}
