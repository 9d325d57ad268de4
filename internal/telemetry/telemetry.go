// Package telemetry sets up OpenTelemetry tracing for the daemon: off by
// default, on when the standard OTEL_EXPORTER_OTLP_ENDPOINT (or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) is set, exporting over OTLP/HTTP
// with the official Go SDK, which reads the other standard OTEL_*
// variables itself (headers, timeout, compression, OTEL_SERVICE_NAME,
// OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER...). The W3C trace context
// is the propagator.
//
// Packages trace through Tracer, which is a no-op until Setup installs a
// provider.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/tasksweeper/sweeper/internal/version"
)

// ScopeName is the instrumentation scope of sweeper's spans.
const ScopeName = "github.com/tasksweeper/sweeper"

// Tracer is sweeper's tracer, from the global provider (a no-op until
// Setup).
func Tracer() trace.Tracer {
	return otel.Tracer(ScopeName, trace.WithInstrumentationVersion(version.Version))
}

// Propagator is the W3C trace context propagator every part uses.
var Propagator = propagation.TraceContext{}

// Enabled reports whether getenv (os.Getenv) turns tracing on: an OTLP
// endpoint is set, the SDK is not disabled and the traces exporter is not
// "none".
func Enabled(getenv func(string) string) bool {
	if strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true") || getenv("OTEL_TRACES_EXPORTER") == "none" {
		return false
	}
	return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// Setup installs the global tracer provider and propagator when getenv
// enables tracing, and returns the function that flushes and stops it
// (a no-op when tracing is off).
func Setup(ctx context.Context, getenv func(string) string) (shutdown func(context.Context) error, err error) {
	otel.SetTextMapPropagator(Propagator)
	if !Enabled(getenv) {
		return func(context.Context) error { return nil }, nil
	}
	if p := getenv("OTEL_EXPORTER_OTLP_PROTOCOL"); p != "" && p != "http/protobuf" {
		return nil, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL=%s: sweeper exports OTLP over HTTP (http/protobuf) only", p)
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("opentelemetry: creating the OTLP/HTTP exporter: %w", err)
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", "sweeper"), attribute.String("service.version", version.Version)),
		resource.WithFromEnv(), resource.WithTelemetrySDK())
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, fmt.Errorf("opentelemetry: resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	return tp.Shutdown, nil
}

// ContextFromTraceParent returns ctx carrying the remote span context of a
// stored traceparent, so that spans started from it join that trace; ctx
// itself when tp is empty or not valid.
func ContextFromTraceParent(ctx context.Context, tp string) context.Context {
	if tp == "" {
		return ctx
	}
	return Propagator.Extract(ctx, propagation.MapCarrier{"traceparent": tp})
}
