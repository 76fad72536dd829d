//! tessera-container
