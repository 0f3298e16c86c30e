//! `chatstream.gateway.v1.AnalyticsService`: the HTTP API's answers over
//! gRPC, for the caller's tenant (or the one an operator key names). A bad
//! parameter is INVALID_ARGUMENT naming it; another tenant's figures asked
//! with a tenant key are PERMISSION_DENIED; an unreachable store is
//! UNAVAILABLE.
use chatstream_core::analytics::query::{
    AnalyticsQuery, AnswerHeader, LatencyAnswer, QueryParameters, UsageAnswer,
};
use chatstream_core::store::StoreError;
use chatstream_schemas::pb::gateway::{
    self as pb,
    analytics_service_server::{AnalyticsService, AnalyticsServiceServer},
};
use tonic::{Request, Response, Status};

use super::{ScopeError, tenant_in_scope};
use crate::Gateway;

pub struct GrpcAnalytics {
    gateway: Gateway,
}

pub fn service(gateway: Gateway) -> AnalyticsServiceServer<GrpcAnalytics> {
    AnalyticsServiceServer::new(GrpcAnalytics { gateway })
}

/// An empty proto3 string is a parameter not given.
fn given(text: &str) -> Option<&str> {
    (!text.is_empty()).then_some(text)
}

impl GrpcAnalytics {
    fn query(&self, request: &Request<pb::AnalyticsQuery>) -> Result<AnalyticsQuery, Status> {
        let query = request.get_ref();
        let tenant_id = tenant_in_scope(
            &self.gateway.tenants,
            crate::grpc::api_key(request.metadata()),
            given(&query.tenant_id),
        )
        .map_err(scope_status)?;
        AnalyticsQuery::parse(
            &tenant_id,
            &QueryParameters {
                from: given(&query.from),
                to: given(&query.to),
                bucket: given(&query.bucket),
                group_by: given(&query.group_by),
            },
            super::now_ms(),
        )
        .map_err(|invalid| Status::invalid_argument(invalid.to_string()))
    }
}

fn scope_status(refused: ScopeError) -> Status {
    let message = refused.to_string();
    match refused {
        ScopeError::Unauthenticated => Status::unauthenticated(message),
        ScopeError::OtherTenant => Status::permission_denied(message),
        ScopeError::TenantRequired => Status::invalid_argument(message),
        ScopeError::UnknownTenant(_) => Status::not_found(message),
    }
}

fn store_status(error: StoreError) -> Status {
    tracing::warn!(%error, "analytics query failed");
    match error {
        StoreError::Unavailable(message) => Status::unavailable(message),
        other => Status::internal(other.to_string()),
    }
}

fn range(header: AnswerHeader) -> pb::AnalyticsRange {
    pb::AnalyticsRange {
        tenant_id: header.tenant_id,
        from: header.from,
        to: header.to,
        bucket: header.bucket.to_owned(),
        group_by: header.group_by.to_owned(),
    }
}

fn usage_report(answer: UsageAnswer) -> pb::UsageReport {
    pb::UsageReport {
        range: Some(range(answer.header)),
        rows: answer
            .rows
            .into_iter()
            .map(|row| pb::UsageRow {
                bucket_start: row.bucket_start,
                group: row.group,
                counters: row.counters.into_iter().collect(),
            })
            .collect(),
        totals: answer
            .totals
            .into_iter()
            .map(|totals| pb::GroupTotals {
                group: totals.group,
                counters: totals.counters.into_iter().collect(),
            })
            .collect(),
    }
}

fn latency_report(answer: LatencyAnswer) -> pb::LatencyReport {
    pb::LatencyReport {
        range: Some(range(answer.header)),
        latencies: answer
            .latencies
            .into_iter()
            .map(|row| {
                let percentile = |name: &str| row.percentiles_ms.get(name).copied().unwrap_or(0);
                pb::LatencyRow {
                    p50_ms: percentile("p50"),
                    p90_ms: percentile("p90"),
                    p99_ms: percentile("p99"),
                    p99_9_ms: percentile("p99_9"),
                    metric: row.metric,
                    group: row.group,
                    count: row.count,
                    max_ms: row.max_ms,
                }
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl AnalyticsService for GrpcAnalytics {
    async fn get_usage(
        &self,
        request: Request<pb::AnalyticsQuery>,
    ) -> Result<Response<pb::UsageReport>, Status> {
        let query = self.query(&request)?;
        let answer = query
            .usage(self.gateway.analytics.as_ref())
            .await
            .map_err(store_status)?;
        Ok(Response::new(usage_report(answer)))
    }

    async fn get_latency(
        &self,
        request: Request<pb::AnalyticsQuery>,
    ) -> Result<Response<pb::LatencyReport>, Status> {
        let query = self.query(&request)?;
        let answer = query
            .latency(self.gateway.analytics.as_ref())
            .await
            .map_err(store_status)?;
        Ok(Response::new(latency_report(answer)))
    }
}
