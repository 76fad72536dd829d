//! tessera-mixer
