//! Access tokens: EdDSA (Ed25519) JWTs signed by the control plane and verified by data planes.
