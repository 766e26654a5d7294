//! RSA2 (RSA 2048, PKCS#1 v1.5 over SHA-256) as Alipay's open platform uses
//! it: the platform's key signs responses and notifications; each
//! merchant's `app_public_key` verifies its requests.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine as _;
use rsa::pkcs1::DecodeRsaPublicKey;
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding};
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};
use sha2::Sha256;

const KEY_BITS: usize = 2_048;
const KEY_FILE: &str = "gateway-key.pem";

/// An RSA2 signing key with its public half as PEM.
pub struct SigningKeyPair {
    key: SigningKey<Sha256>,
    public_pem: String,
}

impl SigningKeyPair {
    /// A key from its PKCS#8 PEM.
    pub fn from_pem(pem: &str) -> anyhow::Result<SigningKeyPair> {
        let private =
            RsaPrivateKey::from_pkcs8_pem(pem).map_err(|error| anyhow::anyhow!("not a PKCS#8 RSA key: {error}"))?;
        let public_pem = RsaPublicKey::from(&private).to_public_key_pem(LineEnding::LF)?;
        Ok(SigningKeyPair { key: SigningKey::<Sha256>::new(private), public_pem })
    }

    /// A new key and its PKCS#8 PEM (a moment's work: RSA key generation).
    pub fn generate() -> anyhow::Result<(SigningKeyPair, String)> {
        let private = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, KEY_BITS)?;
        let pem = private.to_pkcs8_pem(LineEnding::LF)?.to_string();
        Ok((SigningKeyPair::from_pem(&pem)?, pem))
    }

    /// The public key that verifies (PEM, SubjectPublicKeyInfo).
    pub fn public_pem(&self) -> &str {
        &self.public_pem
    }

    /// Base64 of the RSA2 signature of `text`.
    pub fn sign(&self, text: &str) -> anyhow::Result<String> {
        let signature = self.key.try_sign(text.as_bytes())?;
        Ok(base64::engine::general_purpose::STANDARD.encode(signature.to_bytes()))
    }
}

/// A signing key kept in a file of a directory, made on first use (a
/// merchant's app key in tests and tools; the platform's own key lives in
/// its journaled state, so that every node signs with the same).
pub struct PlatformKey {
    path: PathBuf,
    key: Mutex<Option<Arc<SigningKeyPair>>>,
}

impl PlatformKey {
    pub fn in_directory(directory: &Path) -> PlatformKey {
        PlatformKey { path: directory.join(KEY_FILE), key: Mutex::new(None) }
    }

    fn get(&self) -> anyhow::Result<Arc<SigningKeyPair>> {
        let mut slot = self.key.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(key) = slot.as_ref() {
            return Ok(Arc::clone(key));
        }
        let key = match std::fs::read_to_string(&self.path) {
            Ok(pem) => {
                SigningKeyPair::from_pem(&pem).map_err(|error| anyhow::anyhow!("{}: {error}", self.path.display()))?
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let (key, pem) = SigningKeyPair::generate()?;
                write_private(&self.path, pem.as_bytes())?;
                key
            }
            Err(error) => return Err(error.into()),
        };
        let key = Arc::new(key);
        *slot = Some(Arc::clone(&key));
        Ok(key)
    }

    /// The public key that verifies (PEM, SubjectPublicKeyInfo).
    pub fn public_pem(&self) -> anyhow::Result<String> {
        Ok(self.get()?.public_pem().to_string())
    }

    /// Base64 of the RSA2 signature of `text`.
    pub fn sign(&self, text: &str) -> anyhow::Result<String> {
        self.get()?.sign(text)
    }
}

/// Writes the key readable by the owner only, whole or not at all.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let partial = path.with_extension("pem.partial");
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&partial)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&partial, path)?;
    Ok(())
}

/// A merchant's public key from PEM (`PUBLIC KEY` or `RSA PUBLIC KEY`) or
/// the bare base64 of either, as Alipay's tools print it; at least 2048 bits.
pub fn parse_public_key(text: &str) -> Result<RsaPublicKey, String> {
    let text = text.trim();
    let key = if text.starts_with("-----BEGIN PUBLIC KEY-----") {
        RsaPublicKey::from_public_key_pem(text).map_err(|error| error.to_string())
    } else if text.starts_with("-----BEGIN RSA PUBLIC KEY-----") {
        RsaPublicKey::from_pkcs1_pem(text).map_err(|error| error.to_string())
    } else {
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let der = base64::engine::general_purpose::STANDARD.decode(compact).map_err(|error| error.to_string())?;
        RsaPublicKey::from_public_key_der(&der)
            .or_else(|_| RsaPublicKey::from_pkcs1_der(&der))
            .map_err(|error| error.to_string())
    }?;
    if key.size() * 8 < KEY_BITS {
        return Err(format!("the key has {} bits; RSA2 needs at least {KEY_BITS}", key.size() * 8));
    }
    Ok(key)
}

/// Whether `signature` (base64) is the RSA2 signature of `text` under `key`.
pub fn verify(key: &RsaPublicKey, text: &str, signature: &str) -> bool {
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(signature.trim()) else { return false };
    let Ok(signature) = Signature::try_from(bytes.as_slice()) else { return false };
    VerifyingKey::<Sha256>::new(key.clone()).verify(text.as_bytes(), &signature).is_ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_signature_verifies_under_its_key_and_no_other_text() {
        let directory = tempfile::tempdir().unwrap();
        let key = PlatformKey::in_directory(directory.path());
        let signature = key.sign("a=1&b=2").unwrap();
        let public = parse_public_key(&key.public_pem().unwrap()).unwrap();
        assert!(verify(&public, "a=1&b=2", &signature));
        assert!(!verify(&public, "a=1&b=3", &signature));
        assert!(!verify(&public, "a=1&b=2", "not base64!"));
        // The same key after a restart.
        let again = PlatformKey::in_directory(directory.path());
        assert_eq!(again.public_pem().unwrap(), key.public_pem().unwrap());
        // Bare base64, as Alipay's tools print keys.
        let bare: String = key.public_pem().unwrap().lines().filter(|l| !l.starts_with("-----")).collect();
        assert!(parse_public_key(&bare).is_ok());
        assert!(parse_public_key("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----").is_err());
    }
}
