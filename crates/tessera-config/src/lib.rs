//! tessera-config
