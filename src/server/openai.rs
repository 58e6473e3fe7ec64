//! OpenAI's routes: `/v1/embeddings`, `/v1/models`, `/v1/models/{id}` — in OpenAI's schemas,
//! errors included.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde_json::json;

use crate::engine::EmbedRequest;
use crate::model::Truncation;

use super::answer::{public_report, with_headers};
use super::error::ApiError;
use super::schema::{
    EncodingFormat, ModelCard, ModelList, OpenAiBody, OpenAiEmbeddings, OpenAiError,
};
use super::state::AppState;
use super::tei::run;

/// The served model, as OpenAI lists it.
fn card(app: &AppState) -> ModelCard {
    ModelCard {
        id: app.model_name.to_string(),
        object: "model".into(),
        created: app.created,
        owned_by: "hipinfer".into(),
    }
}

/// OpenAI's 404 for a model this server does not serve.
fn no_such_model(app: &AppState, name: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "model_not_found",
        format!(
            "the model {name:?} does not exist here: this server serves {:?}",
            &*app.model_name
        ),
    )
}

/// POST `/v1/embeddings`: OpenAI's embeddings.
#[utoipa::path(post, path = "/v1/embeddings", tag = "OpenAI", request_body = OpenAiBody,
    responses(
        (status = 200, description = "The embeddings", body = OpenAiEmbeddings),
        (status = 404, description = "`model` names a model this server does not serve", body = OpenAiError),
        (status = 422, description = "A wrong field", body = OpenAiError),
        (status = 429, description = "Overloaded", body = OpenAiError),
    ))]
pub async fn embeddings(State(app): State<AppState>, request: Request<Body>) -> Response {
    let body = match app.body(request, OpenAiBody::parse).await {
        Ok(body) => body,
        Err(e) => return e.openai(),
    };
    if let Some(name) = body.model.as_deref().filter(|name| !app.serves(name)) {
        return app.rejected(no_such_model(&app, name)).openai();
    }
    let base64 = body.encoding_format == Some(EncodingFormat::Base64);
    let request = EmbedRequest::new(body.input.into_vec())
        .truncate(app.auto_truncate)
        .truncation_direction(Truncation::Right);
    let answer = match run(&app, request, body.dimensions).await {
        Ok(answer) => answer,
        Err(e) => return e.openai(),
    };
    let data: Vec<_> = answer
        .embeddings
        .iter()
        .enumerate()
        .map(|(index, embedding)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = embedding.iter().flat_map(|v| v.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(embedding)
            };
            json!({"object": "embedding", "embedding": embedding, "index": index})
        })
        .collect();
    let tokens = answer.total_tokens();
    let reply = json!({
        "object": "list",
        "data": data,
        "model": body.model.unwrap_or_else(|| app.model_name.to_string()),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        "retry": public_report(&answer.retry),
    });
    with_headers(Json(reply).into_response(), &answer)
}

/// GET `/v1/models`: the served model.
#[utoipa::path(get, path = "/v1/models", tag = "OpenAI",
    responses((status = 200, description = "The models served (one)", body = ModelList)))]
pub async fn models(State(app): State<AppState>) -> Response {
    Json(ModelList {
        object: "list".into(),
        data: vec![card(&app)],
    })
    .into_response()
}

/// GET `/v1/models/{id}`: the served model, or OpenAI's 404.
#[utoipa::path(get, path = "/v1/models/{id}", tag = "OpenAI",
    params(("id" = String, Path, description = "The model's id")),
    responses(
        (status = 200, description = "The model", body = ModelCard),
        (status = 404, description = "No such model here", body = OpenAiError),
    ))]
pub async fn model(State(app): State<AppState>, Path(id): Path<String>) -> Response {
    if app.serves(&id) {
        Json(card(&app)).into_response()
    } else {
        no_such_model(&app, &id).openai()
    }
}
