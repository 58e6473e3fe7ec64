//! TEI's routes: `/embed`, `/embed_all`, `/similarity`, `/` (the Inference API's payload, as
//! `huggingface_hub`'s `InferenceClient` posts it), `/tokenize`, `/decode`.

use axum::body::Body;
use axum::extract::State;
use axum::http::Request;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::engine::{EmbedRequest, EmbedResponse};

use super::answer::with_headers;
use super::error::ApiError;
use super::schema::{
    DecodeBody, DecodeIds, EmbedAllBody, EmbedBody, PredictBody, SimilarityBody, TeiError,
    TokenBody, TokenizeBody,
};
use super::state::AppState;

/// Runs an embedding request built by the route (the engine refuses empty and blank inputs
/// itself), after the `dimensions` check.
pub(crate) async fn run(
    app: &AppState,
    request: EmbedRequest,
    dimensions: Option<usize>,
) -> Result<EmbedResponse, ApiError> {
    let size = app.engine.model().dimensions();
    if let Some(d) = dimensions.filter(|&d| d != size) {
        return Err(app.rejected(ApiError::validation(format!(
            "\"dimensions\" {d} is not supported: this model's embeddings have {size}"
        ))));
    }
    Ok(app.engine.embed_async(request).await?)
}

/// The request of an embedding body's settings.
fn embed_request(app: &AppState, body: EmbedBody) -> (EmbedRequest, Option<usize>) {
    let request = EmbedRequest::new(body.inputs.into_vec())
        .truncate(body.truncate.unwrap_or(app.auto_truncate))
        .truncation_direction(body.truncation_direction.unwrap_or_default().into())
        .normalize(body.normalize.unwrap_or(true));
    (request, body.dimensions)
}

/// Embeds `body` as `/embed` answers: `[[f32]]`.
async fn embedded(app: &AppState, body: EmbedBody) -> Response {
    let (request, dimensions) = embed_request(app, body);
    match run(app, request, dimensions).await {
        Ok(answer) => with_headers(Json(&answer.embeddings).into_response(), &answer),
        Err(e) => e.tei(),
    }
}

/// The cosine similarity of the source sentence to each sentence, as `/similarity` answers:
/// `[f32]` (the embeddings are unit length, so the dot product).
async fn similarities(app: &AppState, body: SimilarityBody) -> Response {
    let SimilarityBody {
        inputs,
        truncate,
        truncation_direction,
    } = body;
    if inputs.sentences.is_empty() {
        return app
            .rejected(ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                "empty",
                "\"inputs.sentences\" is empty: give at least one sentence",
            ))
            .tei();
    }
    let mut texts = Vec::with_capacity(inputs.sentences.len() + 1);
    texts.push(inputs.source_sentence);
    texts.extend(inputs.sentences);
    let request = EmbedRequest::new(texts)
        .truncate(truncate.unwrap_or(app.auto_truncate))
        .truncation_direction(truncation_direction.unwrap_or_default().into());
    match run(app, request, None).await {
        Ok(answer) => {
            let (source, others) = answer.embeddings.split_first().expect("one source");
            let scores: Vec<f32> = others
                .iter()
                .map(|e| e.iter().zip(source).map(|(a, b)| a * b).sum())
                .collect();
            with_headers(Json(scores).into_response(), &answer)
        }
        Err(e) => e.tei(),
    }
}

/// POST `/embed`: one unit-length embedding per input.
#[utoipa::path(post, path = "/embed", tag = "TEI", request_body = EmbedBody,
    responses(
        (status = 200, description = "One embedding per input, in order", body = Vec<Vec<f32>>),
        (status = 400, description = "An empty or blank input", body = TeiError),
        (status = 413, description = "The body is over the payload limit", body = TeiError),
        (status = 422, description = "A wrong field, or an input too long with truncate: false", body = TeiError),
        (status = 424, description = "The device failed the request after every replay", body = TeiError),
        (status = 429, description = "Overloaded", body = TeiError),
        (status = 503, description = "Unhealthy or shutting down", body = TeiError),
        (status = 504, description = "Past the request deadline", body = TeiError),
    ))]
pub async fn embed(State(app): State<AppState>, request: Request<Body>) -> Response {
    match app.body(request, EmbedBody::parse).await {
        Ok(body) => embedded(&app, body).await,
        Err(e) => e.tei(),
    }
}

/// POST `/embed_all`: every token's hidden state (the last layer, unpooled, not normalised).
#[utoipa::path(post, path = "/embed_all", tag = "TEI", request_body = EmbedAllBody,
    responses(
        (status = 200, description = "Per input, per token, the hidden state", body = Vec<Vec<Vec<f32>>>),
        (status = 422, description = "A wrong field", body = TeiError),
    ))]
pub async fn embed_all(State(app): State<AppState>, request: Request<Body>) -> Response {
    let body = match app.body(request, EmbedAllBody::parse).await {
        Ok(body) => body,
        Err(e) => return e.tei(),
    };
    let request = EmbedRequest::new(body.inputs.into_vec())
        .truncate(body.truncate.unwrap_or(app.auto_truncate))
        .truncation_direction(body.truncation_direction.unwrap_or_default().into())
        .normalize(false)
        .per_token();
    match run(&app, request, None).await {
        Ok(answer) => with_headers(Json(answer.token_embeddings()).into_response(), &answer),
        Err(e) => e.tei(),
    }
}

/// POST `/similarity`: the cosine similarity of `source_sentence` to each of `sentences`.
#[utoipa::path(post, path = "/similarity", tag = "TEI", request_body = SimilarityBody,
    responses(
        (status = 200, description = "One similarity per sentence, in order", body = Vec<f32>),
        (status = 422, description = "A wrong field", body = TeiError),
    ))]
pub async fn similarity(State(app): State<AppState>, request: Request<Body>) -> Response {
    match app.body(request, SimilarityBody::parse).await {
        Ok(body) => similarities(&app, body).await,
        Err(e) => e.tei(),
    }
}

/// POST `/`: the Inference API's payload — texts are embedded (as `/embed`), a
/// `{source_sentence, sentences}` object is a similarity (as `/similarity`).
#[utoipa::path(post, path = "/", tag = "TEI", request_body = PredictBody,
    responses(
        (status = 200, description = "Embeddings `[[f32]]`, or similarities `[f32]`", body = Vec<Vec<f32>>),
        (status = 422, description = "Neither texts nor a similarity object", body = TeiError),
    ))]
pub async fn predict(State(app): State<AppState>, request: Request<Body>) -> Response {
    match app.body(request, PredictBody::parse).await {
        Ok(PredictBody::Embed(body)) => embedded(&app, body).await,
        Ok(PredictBody::Similarity(body)) => similarities(&app, body).await,
        Err(e) => e.tei(),
    }
}

/// POST `/tokenize`: the tokens of each input, held to `max_input_length`.
#[utoipa::path(post, path = "/tokenize", tag = "TEI", request_body = TokenizeBody,
    responses(
        (status = 200, description = "Per input, its tokens", body = Vec<Vec<TokenBody>>),
        (status = 422, description = "A wrong field, or more inputs than max_client_batch_size", body = TeiError),
    ))]
pub async fn tokenize(State(app): State<AppState>, request: Request<Body>) -> Response {
    let body = match app.body(request, TokenizeBody::parse).await {
        Ok(body) => body,
        Err(e) => return e.tei(),
    };
    match app
        .engine
        .tokens_async(
            body.inputs.into_vec(),
            body.add_special_tokens.unwrap_or(true),
        )
        .await
    {
        Ok(all) => Json(all).into_response(),
        Err(e) => ApiError::from(e).tei(),
    }
}

/// POST `/decode`: the text of token ids.
#[utoipa::path(post, path = "/decode", tag = "TEI", request_body = DecodeBody,
    responses(
        (status = 200, description = "One text per list of ids", body = Vec<String>),
        (status = 422, description = "A wrong field, or an id outside the vocabulary", body = TeiError),
    ))]
pub async fn decode(State(app): State<AppState>, request: Request<Body>) -> Response {
    let body = match app.body(request, DecodeBody::parse).await {
        Ok(body) => body,
        Err(e) => return e.tei(),
    };
    let skip = body.skip_special_tokens.unwrap_or(true);
    let lists = match body.ids {
        DecodeIds::One(ids) => vec![ids],
        DecodeIds::Many(lists) => lists,
    };
    let limit = app.engine.config().batching.max_client_batch_size;
    if lists.len() > limit {
        return app
            .rejected(ApiError::validation(format!(
                "{} lists of ids is more than max_client_batch_size {limit}",
                lists.len()
            )))
            .tei();
    }
    let engine = app.engine.clone();
    let decoded = tokio::task::spawn_blocking(move || {
        let tokenizer = engine.model().tokenizer()?;
        lists
            .iter()
            .map(|ids| tokenizer.decode(ids, skip))
            .collect::<Result<Vec<String>, _>>()
    })
    .await;
    match decoded {
        Ok(Ok(texts)) => Json(texts).into_response(),
        Ok(Err(e)) => app.rejected(ApiError::validation(e.to_string())).tei(),
        Err(e) => ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "backend",
            format!("the decode task failed: {e}"),
        )
        .tei(),
    }
}
