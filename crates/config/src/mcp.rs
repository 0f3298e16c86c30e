//! A tenant's MCP servers as the tenants file lists them: how to reach each
//! one (a child process over stdio, or Streamable HTTP), which of its tools
//! the tenant's models may call, and which calls wait for a person.
use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpServerConfig {
    /// The name models use (`<server>.<tool>`); unique within the tenant.
    pub name: String,
    pub transport: McpTransportConfig,
    /// Tools the tenant's models may call; every tool the server lists when absent.
    #[serde(default)]
    pub allowed_tools: Option<Vec<String>>,
    /// Tools whose calls wait for a client's approval; `*` means every tool.
    #[serde(default)]
    pub require_approval: Vec<String>,
    /// Longest a call may run; the processor's default when absent.
    #[serde(default)]
    pub call_timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum McpTransportConfig {
    /// The server runs as a child process speaking JSON-RPC on stdin/stdout.
    Stdio {
        command: String,
        #[serde(default)]
        args: Vec<String>,
        #[serde(default)]
        env: BTreeMap<String, String>,
    },
    /// The server listens at `url` (the MCP endpoint, e.g. `http://host/mcp`).
    StreamableHttp {
        url: String,
        /// Sent with every request, e.g. `Authorization`.
        #[serde(default)]
        headers: BTreeMap<String, String>,
    },
}

impl McpServerConfig {
    /// Whether the tenant's models may call `tool` on this server.
    pub fn allows(&self, tool: &str) -> bool {
        self.allowed_tools
            .as_ref()
            .is_none_or(|allowed| allowed.iter().any(|t| t == tool))
    }

    /// Whether a call of `tool` waits for a person's approval.
    pub fn needs_approval(&self, tool: &str) -> bool {
        self.require_approval.iter().any(|t| t == "*" || t == tool)
    }
}

/// Checks one tenant's list; the error names the offending server.
pub fn validate_mcp_servers(servers: &[McpServerConfig]) -> Result<(), String> {
    let mut names = HashSet::new();
    for server in servers {
        let plain = !server.name.is_empty()
            && server.name.len() <= 64
            && server
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
        if !plain {
            return Err(format!(
                "mcp server name {:?} must be 1-64 characters of A-Z, a-z, 0-9, '-' or '_'",
                server.name
            ));
        }
        if !names.insert(server.name.as_str()) {
            return Err(format!("mcp server {:?} is listed twice", server.name));
        }
        match &server.transport {
            McpTransportConfig::Stdio { command, .. } if command.trim().is_empty() => {
                return Err(format!("mcp server {:?}: command is empty", server.name));
            }
            McpTransportConfig::StreamableHttp { url, .. }
                if !(url.starts_with("http://") || url.starts_with("https://")) =>
            {
                return Err(format!(
                    "mcp server {:?}: url {url:?} must start with http:// or https://",
                    server.name
                ));
            }
            _ => {}
        }
        if server.call_timeout_ms == Some(0) {
            return Err(format!(
                "mcp server {:?}: call_timeout_ms must be at least 1",
                server.name
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Vec<McpServerConfig> {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn parses_both_transports_and_policies() {
        let servers = parse(
            "- name: time\n  transport: {type: stdio, command: mcp-server-time, args: [--local-timezone, UTC]}\n  allowed_tools: [get_current_time]\n- name: web\n  transport: {type: streamable_http, url: 'http://127.0.0.1:3001/mcp', headers: {Authorization: Bearer x}}\n  require_approval: ['*']\n",
        );
        validate_mcp_servers(&servers).unwrap();
        assert!(servers[0].allows("get_current_time"));
        assert!(!servers[0].allows("convert_time"));
        assert!(!servers[0].needs_approval("get_current_time"));
        assert!(servers[1].allows("anything"));
        assert!(servers[1].needs_approval("anything"));
    }

    #[test]
    fn rejects_bad_servers_with_a_reason() {
        let twice = parse(
            "- {name: a, transport: {type: stdio, command: x}}\n- {name: a, transport: {type: stdio, command: y}}\n",
        );
        assert!(validate_mcp_servers(&twice).unwrap_err().contains("twice"));
        let bad_url = parse("- {name: a, transport: {type: streamable_http, url: 'ftp://x'}}\n");
        assert!(
            validate_mcp_servers(&bad_url)
                .unwrap_err()
                .contains("http://")
        );
        let bad_name = parse("- {name: 'a.b', transport: {type: stdio, command: x}}\n");
        assert!(
            validate_mcp_servers(&bad_name)
                .unwrap_err()
                .contains("name")
        );
        assert!(
            serde_yaml_ng::from_str::<Vec<McpServerConfig>>(
                "- {name: a, transport: {type: carrier_pigeon}}\n"
            )
            .is_err()
        );
    }
}
