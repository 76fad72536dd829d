//! `tessera token`: mints a join token with the config's `auth.token_secret`.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use tessera_config::Config;
use tessera_server::auth::{self, Claims, Perm};

#[derive(Args)]
pub struct TokenArgs {
    /// Config file whose `auth.token_secret` signs the token.
    #[arg(long)]
    config: PathBuf,
    /// Room the token admits to; `*` for any room.
    #[arg(long)]
    room: String,
    /// Participant name the holder must join with; any name if absent.
    #[arg(long)]
    name: Option<String>,
    /// How long the token is valid: seconds, or a number with s, m, h or d (e.g. 8h).
    #[arg(long, default_value = "24h")]
    ttl: String,
    /// Comma-separated permissions: publish, subscribe, admin.
    #[arg(long, default_value = "publish,subscribe")]
    perms: String,
}

/// `90`, `90s`, `15m`, `8h`, `7d` in seconds.
fn parse_ttl(s: &str) -> anyhow::Result<u64> {
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = digits
        .parse()
        .with_context(|| format!("--ttl {s:?}: must be a number with s, m, h or d"))?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => bail!("--ttl {s:?}: the unit must be s, m, h or d"),
    };
    if n == 0 {
        bail!("--ttl {s:?}: must be more than 0");
    }
    Ok(n * scale)
}

pub fn run(args: TokenArgs) -> anyhow::Result<()> {
    let cfg = Config::load(&args.config)?;
    if cfg.auth.token_secret.is_empty() {
        bail!(
            "{}: auth.token_secret is \"\": set a secret of at least 32 characters first",
            args.config.display()
        );
    }
    let perms = args
        .perms
        .split(',')
        .map(|p| p.trim().parse::<Perm>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    let claims = Claims {
        room: args.room,
        name: args.name,
        exp: auth::now_unix() + parse_ttl(&args.ttl)?,
        perms,
    };
    println!("{}", auth::mint(&cfg.auth.token_secret, &claims));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_ttl;

    #[test]
    fn ttls_take_units() {
        assert_eq!(parse_ttl("90").unwrap(), 90);
        assert_eq!(parse_ttl("15m").unwrap(), 900);
        assert_eq!(parse_ttl("8h").unwrap(), 28_800);
        assert_eq!(parse_ttl("7d").unwrap(), 604_800);
        assert!(parse_ttl("0").is_err());
        assert!(parse_ttl("5y").is_err());
        assert!(parse_ttl("h").is_err());
    }
}
