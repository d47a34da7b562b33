//! Target `config_toml`: the node's TOML configuration file, as an operator (or a template
//! gone wrong) writes it.
//!
//! The input is the file's text. Checked: parsing never panics; a layer it accepts resolves
//! to a configuration or a typed error, never a panic; a configuration it accepts holds
//! usable values (a valid DHT configuration, 1 ≤ W ≤ RF, a positive request cap and body
//! timeout); and a layer laid over itself resolves to the same configuration.

use node::config::{ConfigLayer, NodeConfig};

/// Runs every check on one input; panics on a violation.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(layer) = toml::from_str::<ConfigLayer>(text) else {
        return;
    };
    let Ok(config) = NodeConfig::resolve(layer.clone()) else {
        return;
    };
    if let Err(why) = config.dht.validate() {
        panic!("resolved an invalid DHT configuration ({why}): {config:?}");
    }
    let o = &config.objects;
    assert!(
        1 <= o.w && o.w <= o.rf,
        "resolved rf {} and w {}",
        o.rf,
        o.w
    );
    assert!(config.http_requests_max >= 1);
    assert!((1..=1 << 16).contains(&o.writes_max));
    assert!(!config.http_body_timeout.is_zero());
    let again = NodeConfig::resolve(layer.clone().overlay(layer))
        .unwrap_or_else(|e| panic!("a layer over itself fails: {e}"));
    assert_eq!(again, config, "a layer over itself resolves differently");
}
