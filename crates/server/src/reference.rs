//! `GET /docs/api`: the API reference, rendered on the server from the
//! same OpenAPI document `/openapi.json` serves (no viewer from a CDN):
//! every operation by tag with its parameters, body and answers, and every
//! schema with its fields.

use askama::Template;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use utoipa::OpenApi;

struct Operation {
    anchor: String,
    method: String,
    path: String,
    summary: String,
    parameters: Vec<Field>,
    body: String,
    answers: String,
}

struct Field {
    name: String,
    kind: String,
    required: bool,
    description: String,
}

struct Schema {
    name: String,
    fields: Vec<Field>,
}

struct Tag {
    name: String,
    operations: Vec<Operation>,
}

#[derive(Template)]
#[template(path = "desk/reference.html")]
struct ReferencePage {
    title: String,
    description: String,
    tags: Vec<Tag>,
    schemas: Vec<Schema>,
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_string()
}

/// A schema's type as one short phrase: `string`, `Foo`, `array of Foo`.
fn kind_of(schema: &Value) -> String {
    if let Some(reference) = schema["$ref"].as_str() {
        return reference.rsplit('/').next().unwrap_or(reference).to_string();
    }
    if let Some(all) = schema["allOf"].as_array().or_else(|| schema["oneOf"].as_array()) {
        return all.iter().map(kind_of).filter(|k| k != "null").collect::<Vec<_>>().join(" or ");
    }
    match &schema["type"] {
        Value::String(kind) if kind == "array" => format!("array of {}", kind_of(&schema["items"])),
        Value::String(kind) => kind.clone(),
        Value::Array(kinds) => {
            kinds.iter().filter_map(Value::as_str).filter(|k| *k != "null").collect::<Vec<_>>().join(" or ")
        }
        _ => "object".to_string(),
    }
}

fn operations_by_tag(document: &Value) -> Vec<Tag> {
    let mut tags: Vec<Tag> = Vec::new();
    let paths = document["paths"].as_object().cloned().unwrap_or_default();
    for (path, item) in &paths {
        for method in ["get", "post", "put", "delete"] {
            let operation = &item[method];
            if !operation.is_object() {
                continue;
            }
            let tag = operation["tags"][0].as_str().unwrap_or("other").to_string();
            let parameters = operation["parameters"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|parameter| Field {
                    name: format!("{} ({})", text(&parameter["name"]), text(&parameter["in"])),
                    kind: kind_of(&parameter["schema"]),
                    required: parameter["required"].as_bool() == Some(true),
                    description: text(&parameter["description"]),
                })
                .collect();
            let body = kind_of(&operation["requestBody"]["content"]["application/json"]["schema"]);
            let answers = operation["responses"]
                .as_object()
                .map(|answers| answers.keys().cloned().collect::<Vec<_>>().join(", "))
                .unwrap_or_default();
            let summary = [text(&operation["summary"]), text(&operation["description"])].join(" ").trim().to_string();
            let entry = Operation {
                anchor: format!("{method}-{}", path.replace(['/', '{', '}'], "-")),
                method: method.to_uppercase(),
                path: path.clone(),
                summary,
                parameters,
                body: if operation["requestBody"].is_object() { body } else { String::new() },
                answers,
            };
            match tags.iter_mut().find(|existing| existing.name == tag) {
                Some(existing) => existing.operations.push(entry),
                None => tags.push(Tag { name: tag, operations: vec![entry] }),
            }
        }
    }
    tags.sort_by(|a, b| a.name.cmp(&b.name));
    tags
}

fn schemas(document: &Value) -> Vec<Schema> {
    let all = document["components"]["schemas"].as_object().cloned().unwrap_or_default();
    all.iter()
        .map(|(name, schema)| {
            let required: Vec<&str> =
                schema["required"].as_array().map(|r| r.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
            let fields = schema["properties"]
                .as_object()
                .map(|properties| {
                    properties
                        .iter()
                        .map(|(field, property)| Field {
                            name: field.clone(),
                            kind: kind_of(property),
                            required: required.contains(&field.as_str()),
                            description: text(&property["description"]),
                        })
                        .collect()
                })
                .unwrap_or_default();
            Schema { name: name.clone(), fields }
        })
        .collect()
}

pub async fn page() -> Response {
    let Ok(document) = serde_json::to_value(crate::routes::ApiDoc::openapi()) else {
        return crate::error::ApiError::internal("the OpenAPI document does not encode").into_response();
    };
    let page = ReferencePage {
        title: text(&document["info"]["title"]),
        description: text(&document["info"]["description"]),
        tags: operations_by_tag(&document),
        schemas: schemas(&document),
    };
    match page.render() {
        Ok(html) => crate::web::page(StatusCode::OK, html, None, &[]),
        Err(_) => crate::error::ApiError::internal("the reference did not render").into_response(),
    }
}
