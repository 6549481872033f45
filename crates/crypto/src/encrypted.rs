//! `Encrypted<T>`: a field ciphertext that remembers the type of its plaintext, stored as
//! `bytea`. Repositories hold these; only [`Keyring::open`] turns one back into a `T`.

use std::marker::PhantomData;

use sqlx::Postgres;
use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef};
use zeroize::Zeroizing;

use crate::error::CryptoError;
use crate::field::FieldLocation;
use crate::keyring::{Keyring, Owner};

/// A plaintext type that can be stored encrypted.
pub trait FieldValue: Sized {
    fn to_plaintext(&self) -> Zeroizing<Vec<u8>>;
    fn from_plaintext(bytes: &[u8]) -> Result<Self, CryptoError>;
}

impl FieldValue for String {
    fn to_plaintext(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.as_bytes().to_vec())
    }

    fn from_plaintext(bytes: &[u8]) -> Result<Self, CryptoError> {
        String::from_utf8(bytes.to_vec()).map_err(|_| CryptoError::InvalidPlaintext)
    }
}

impl FieldValue for chrono::NaiveDate {
    fn to_plaintext(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.format("%Y-%m-%d").to_string().into_bytes())
    }

    fn from_plaintext(bytes: &[u8]) -> Result<Self, CryptoError> {
        let text = std::str::from_utf8(bytes).map_err(|_| CryptoError::InvalidPlaintext)?;
        chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .map_err(|_| CryptoError::InvalidPlaintext)
    }
}

pub struct Encrypted<T> {
    bytes: Vec<u8>,
    _plaintext: PhantomData<fn() -> T>,
}

impl<T> Encrypted<T> {
    pub fn from_ciphertext(bytes: Vec<u8>) -> Self {
        Self {
            bytes,
            _plaintext: PhantomData,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl<T> Clone for Encrypted<T> {
    fn clone(&self) -> Self {
        Self::from_ciphertext(self.bytes.clone())
    }
}

impl<T> std::fmt::Debug for Encrypted<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Encrypted<{}>({} bytes)",
            std::any::type_name::<T>(),
            self.bytes.len()
        )
    }
}

impl Keyring {
    pub async fn seal<T: FieldValue>(
        &self,
        owner: Owner,
        location: &FieldLocation<'static>,
        value: &T,
    ) -> Result<Encrypted<T>, CryptoError> {
        let plaintext = value.to_plaintext();
        Ok(Encrypted::from_ciphertext(
            self.encrypt(owner, location, &plaintext).await?,
        ))
    }

    pub async fn open<T: FieldValue>(
        &self,
        location: &FieldLocation<'static>,
        value: &Encrypted<T>,
    ) -> Result<T, CryptoError> {
        T::from_plaintext(&self.decrypt(location, &value.bytes).await?)
    }
}

impl<T> sqlx::Type<Postgres> for Encrypted<T> {
    fn type_info() -> PgTypeInfo {
        <Vec<u8> as sqlx::Type<Postgres>>::type_info()
    }
}

impl<T> sqlx::Encode<'_, Postgres> for Encrypted<T> {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        <&[u8] as sqlx::Encode<Postgres>>::encode(self.bytes.as_slice(), buf)
    }
}

impl<'r, T> sqlx::Decode<'r, Postgres> for Encrypted<T> {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        Ok(Self::from_ciphertext(<Vec<u8> as sqlx::Decode<
            Postgres,
        >>::decode(value)?))
    }
}
