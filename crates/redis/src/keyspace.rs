//! Names of every Redis key and channel chatstream uses, in one place.
//!
//! Names start with a configurable prefix (so several deployments or test
//! runs can share a server) and carry the tenant id as a hash tag (`{...}`),
//! so a Redis Cluster keeps all of one tenant's keys on one shard and a Lua
//! script may touch several of them. Ids are escaped, so no tenant or
//! conversation id can make its name collide with another's.

/// The key prefix of one deployment, and the names built from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisKeyspace {
    prefix: String,
}

impl RedisKeyspace {
    /// The prefix used when none is configured.
    pub const DEFAULT_PREFIX: &'static str = "chatstream";

    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The pub/sub channel of one conversation.
    pub fn fanout_channel(&self, tenant_id: &str, conversation_id: &str) -> String {
        format!(
            "{}:fanout:{{{}}}:{}",
            self.prefix,
            escape(tenant_id),
            escape(conversation_id)
        )
    }

    /// A channel nobody subscribes to, used to ask the server whether it has
    /// sharded pub/sub.
    pub fn fanout_probe_channel(&self) -> String {
        format!("{}:fanout-probe", self.prefix)
    }

    /// The key holding a tenant's request-rate state (its GCRA arrival time).
    pub fn rate_limit_key(&self, tenant_id: &str) -> String {
        format!("{}:ratelimit:{{{}}}", self.prefix, escape(tenant_id))
    }

    /// The stream holding a conversation's recent committed events.
    pub fn recent_history_key(&self, tenant_id: &str, conversation_id: &str) -> String {
        format!(
            "{}:history:{{{}}}:{}",
            self.prefix,
            escape(tenant_id),
            escape(conversation_id)
        )
    }

    /// The key reserving a tenant's client message id while a send with it
    /// is appended, then holding its outcome for retries.
    pub fn client_message_key(&self, tenant_id: &str, client_message_id: &str) -> String {
        format!(
            "{}:sent:{{{}}}:{}",
            self.prefix,
            escape(tenant_id),
            escape(client_message_id)
        )
    }

    /// The hash holding a tenant's open connections, one field per gateway.
    pub fn connections_key(&self, tenant_id: &str) -> String {
        format!("{}:connections:{{{}}}", self.prefix, escape(tenant_id))
    }
}

impl Default for RedisKeyspace {
    fn default() -> Self {
        Self::new(Self::DEFAULT_PREFIX)
    }
}

/// Percent-escapes the characters that structure a name (`:` separates
/// parts, braces delimit the hash tag), so names stay unambiguous whatever
/// the ids contain.
fn escape(id: &str) -> String {
    let mut escaped = String::with_capacity(id.len());
    for c in id.chars() {
        match c {
            '%' => escaped.push_str("%25"),
            ':' => escaped.push_str("%3A"),
            '{' => escaped.push_str("%7B"),
            '}' => escaped.push_str("%7D"),
            c => escaped.push(c),
        }
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_is_the_hash_tag() {
        let keys = RedisKeyspace::new("cs");
        assert_eq!(keys.fanout_channel("acme", "c1"), "cs:fanout:{acme}:c1");
        assert_eq!(keys.rate_limit_key("acme"), "cs:ratelimit:{acme}");
        assert_eq!(keys.connections_key("acme"), "cs:connections:{acme}");
    }

    #[test]
    fn ids_cannot_forge_another_tenants_channel() {
        let keys = RedisKeyspace::new("cs");
        let forged = keys.fanout_channel("a}:b", "c");
        let genuine = keys.fanout_channel("a", "b}:c");
        assert_ne!(forged, genuine);
        assert_eq!(forged, "cs:fanout:{a%7D%3Ab}:c");
        assert_eq!(
            keys.fanout_channel("a", "100%"),
            "cs:fanout:{a}:100%25",
            "the escape character is escaped too"
        );
    }
}
