//! `spec.inbound.mtls`: whether callers must present a workload
//! certificate, and which identities may call (docs/identity.md,
//! "Authorization"). Part of `ResiliencePolicy` rather than a kind of its
//! own: it guards the same service port as the rest of `spec.inbound`
//! (the policy's target), is delivered, versioned and ACKed with it, and
//! one document per port keeps "what protects this port" in one place.

use serde::{Deserialize, Serialize};

use super::spiffe::SpiffeId;

/// Most identities one allow-list may name.
pub const MAX_ALLOWED_CLIENTS: usize = 256;

/// Whether plaintext callers are admitted.
#[derive(
    Serialize, Deserialize, schemars::JsonSchema, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
#[serde(rename_all = "lowercase")]
pub enum MtlsMode {
    /// Callers with and without a verified certificate are admitted (the
    /// default: meshed and unmeshed callers both work while a mesh grows).
    #[default]
    Permissive,
    /// Only callers that presented a verified workload certificate.
    Strict,
}

impl MtlsMode {
    /// The YAML spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            MtlsMode::Permissive => "permissive",
            MtlsMode::Strict => "strict",
        }
    }

    /// Reads the YAML spelling.
    pub fn parse(text: &str) -> Option<MtlsMode> {
        match text {
            "permissive" => Some(MtlsMode::Permissive),
            "strict" => Some(MtlsMode::Strict),
            _ => None,
        }
    }
}

/// `spec.inbound.mtls`.
#[derive(Serialize, Deserialize, schemars::JsonSchema, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InboundMtls {
    /// `strict` or `permissive` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<MtlsMode>,
    /// The only client identities admitted (absent: any the mode admits).
    /// A caller without a verified identity is never on the list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_clients: Option<Vec<SpiffeId>>,
}

impl InboundMtls {
    /// The mode, default resolved.
    pub fn mode(&self) -> MtlsMode {
        self.mode.unwrap_or_default()
    }
}
