//! tessera-compose
