//! The tools seam: what a tenant's models may call, as the router offers
//! them. The mcp processor implements it from the tenant's MCP servers;
//! only ever the tenant's own tools are listed.
use async_trait::async_trait;

/// One tool a tenant's model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolDescriptor {
    /// The tenant's name for the server.
    pub server: String,
    pub tool: String,
    pub description: String,
    /// The tool's JSON Schema for its arguments.
    pub input_schema: serde_json::Value,
}

impl ToolDescriptor {
    /// The name events and logs use: `<server>.<tool>`.
    pub fn qualified_name(&self) -> String {
        format!("{}.{}", self.server, self.tool)
    }
}

#[async_trait]
pub trait ToolCatalog: Send + Sync + 'static {
    /// Every tool `tenant_id` may call, across its servers. Servers that
    /// cannot be reached are left out (and logged), not an error.
    async fn tools_for_tenant(&self, tenant_id: &str) -> Vec<ToolDescriptor>;
}
