//! Typed access to a model: its rows as the app's own Rust type, and writes
//! from values of it.

use std::marker::PhantomData;

use futures_util::{Stream, StreamExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::change::{Change, Filter, Row};
use crate::client::SyncClient;
use crate::error::{ClientError, codes};

/// A model read and written as `T` (see [`SyncClient::model`]).
#[derive(Debug)]
pub struct TypedModel<'a, T> {
    client: &'a SyncClient,
    model: String,
    _rows: PhantomData<fn() -> T>,
}

impl SyncClient {
    /// Read and write `model` as `T`: rows decode into `T` (a row that does
    /// not is an error with code [`codes::DECODE`] naming it), and inserts
    /// take a `T`.
    ///
    /// ```no_run
    /// # async fn run(client: better_sync_client::SyncClient) -> Result<(), better_sync_client::ClientError> {
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Todo { title: String, done: bool }
    ///
    /// let todos = client.model::<Todo>("todo");
    /// todos.insert("1", &Todo { title: "Write docs".into(), done: false }).await?;
    /// todos.update("1", &serde_json::json!({ "done": true })).await?;
    /// let open: Vec<Todo> = todos.all().await?;
    /// # Ok(()) }
    /// ```
    pub fn model<T: Serialize + DeserializeOwned>(&self, model: &str) -> TypedModel<'_, T> {
        TypedModel {
            client: self,
            model: model.to_owned(),
            _rows: PhantomData,
        }
    }
}

fn decode<T: DeserializeOwned>(model: &str, id: &str, value: Value) -> Result<T, ClientError> {
    serde_json::from_value(value).map_err(|e| {
        ClientError::new(
            codes::DECODE,
            format!("row {model}/{id} does not decode as the model's type: {e}"),
        )
    })
}

fn decode_rows<T: DeserializeOwned>(model: &str, rows: Vec<Row>) -> Result<Vec<T>, ClientError> {
    rows.into_iter()
        .map(|r| decode(model, &r.id, r.value))
        .collect()
}

fn encode<V: Serialize + ?Sized>(value: &V) -> Result<Value, ClientError> {
    serde_json::to_value(value).map_err(|e| {
        ClientError::new(
            codes::DECODE,
            format!("the value does not encode as JSON: {e}"),
        )
    })
}

impl<T: Serialize + DeserializeOwned> TypedModel<'_, T> {
    /// The live row `id`, if any.
    pub async fn get(&self, id: &str) -> Result<Option<T>, ClientError> {
        match self.client.get(&self.model, id).await {
            Some(value) => decode(&self.model, id, value).map(Some),
            None => Ok(None),
        }
    }

    /// Every live row, by id.
    pub async fn all(&self) -> Result<Vec<T>, ClientError> {
        self.query(&Filter::all()).await
    }

    /// The live rows `filter` lets through, by id.
    pub async fn query(&self, filter: &Filter) -> Result<Vec<T>, ClientError> {
        decode_rows(&self.model, self.client.query(&self.model, filter).await)
    }

    /// The rows of `filter` now, then again after every change that alters
    /// them.
    pub fn subscribe(
        &self,
        filter: Filter,
    ) -> impl Stream<Item = Result<Vec<T>, ClientError>> + Send + 'static {
        let model = self.model.clone();
        self.client
            .subscribe_query(&self.model, filter)
            .into_stream()
            .map(move |rows| decode_rows(&model, rows))
    }

    /// Insert (or re-create) row `id` from `row`; the change's op id.
    pub async fn insert(&self, id: &str, row: &T) -> Result<String, ClientError> {
        let change = Change::insert(id, encode(row)?);
        self.client.apply_change(&self.model, change).await
    }

    /// Change the fields of row `id` that `patch` holds (any serializable
    /// value with some of `T`'s fields).
    pub async fn update<P: Serialize + ?Sized>(
        &self,
        id: &str,
        patch: &P,
    ) -> Result<String, ClientError> {
        let change = Change::update(id, encode(patch)?);
        self.client.apply_change(&self.model, change).await
    }

    /// Delete row `id`.
    pub async fn delete(&self, id: &str) -> Result<String, ClientError> {
        self.client
            .apply_change(&self.model, Change::delete(id))
            .await
    }
}
