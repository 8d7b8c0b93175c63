// Command goclient plays the two real Planto clients against a running gateway: the CLI's
// `usage` billing calls (every scope, on both endpoints, decoded and rendered as the CLI does),
// the ApiError of a 402, a 403 and a 401, and the server's streamed model calls (closed at the
// usage chunk) and mid-stream error frame. It prints one JSON summary line; any failure exits 1.
//
// Environment: GATEWAY (base URL), KEY (an integrated org with debits and credits), BROKE_KEY (an
// integrated org without credits), BYO_TRIAL_KEY (a BYO trial org already at its plan limit),
// PLAN_ID and SESSION_ID (tags its debits carry).
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/shopspring/decimal"
)

var gateway = mustEnv("GATEWAY")

func mustEnv(name string) string {
	v := os.Getenv(name)
	if v == "" {
		fail("%s is not set", name)
	}
	return v
}

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "goclient: "+format+"\n", args...)
	os.Exit(1)
}

// call sends a request the way the CLI's api client does and returns the status and body.
func call(method, path, key string, body interface{}, headers map[string]string) (int, http.Header, []byte) {
	var reader io.Reader
	if body != nil {
		encoded, err := json.Marshal(body)
		if err != nil {
			fail("marshal %s: %v", path, err)
		}
		reader = bytes.NewReader(encoded)
	}
	req, err := http.NewRequest(method, gateway+path, reader)
	if err != nil {
		fail("request %s: %v", path, err)
	}
	req.Header.Set("Authorization", "Bearer "+key)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		fail("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		fail("read %s: %v", path, err)
	}
	return res.StatusCode, res.Header, data
}

func decode(path string, data []byte, into interface{}) {
	if err := json.Unmarshal(data, into); err != nil {
		fail("decode %s: %v\n%s", path, err, data)
	}
}

type scope struct {
	name string
	req  CreditsLogRequest
}

// scopes are the CLI's six `usage` scopes, each filling in only its own field.
func scopes(planId, sessionId string) []scope {
	// The user's local midnight, with a UTC offset, as the CLI sends `dayStart` for today.
	zone := time.FixedZone("UTC-5", -5*3600)
	now := time.Now().In(zone)
	midnight := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, zone)
	return []scope{
		{"today", CreditsLogRequest{DayStart: &midnight}},
		{"month", CreditsLogRequest{Month: true}},
		{"plan", CreditsLogRequest{PlanId: planId}},
		{"session", CreditsLogRequest{SessionId: sessionId}},
		{"debits", CreditsLogRequest{TransactionType: "debit"}},
		{"purchases", CreditsLogRequest{TransactionType: "credit"}},
	}
}

// renderRow renders a log row as the CLI does: it dereferences the fields it needs without nil
// checks and shows the markup as surcharge / base, so a missing field or a zero base panics here.
func renderRow(t *CreditsTransaction) string {
	if t.TransactionType == "credit" {
		var desc string
		switch *t.CreditType {
		case "trial":
			desc = "trial credits"
		case "grant":
			desc = "granted credits"
		case "purchase":
			desc = "purchased credits"
		case "switch":
			desc = "credits from switching plans"
		default:
			fail("credit %s has a type the CLI does not render: %q", t.Id, *t.CreditType)
		}
		return fmt.Sprintf("%s +%s %s", t.CreatedAt.Format(time.RFC3339), t.Amount.String(), desc)
	}
	model := *t.DebitModelName
	if *t.DebitModelProvider != "openai" {
		model = string(*t.DebitModelProvider) + "/" + model
	}
	markup := t.DebitSurcharge.Div(*t.DebitBaseAmount).Mul(decimal.NewFromInt(100))
	million := decimal.NewFromInt(1_000_000)
	line := fmt.Sprintf("%s -%s %s %s in=%d out=%d $%s/$%s per 1M, base %s + %s%% markup",
		t.CreatedAt.Format(time.RFC3339), t.Amount.String(), *t.DebitPurpose, model,
		*t.DebitInputTokens, *t.DebitOutputTokens,
		t.DebitModelInputPricePerToken.Mul(million).String(),
		t.DebitModelOutputPricePerToken.Mul(million).String(),
		t.DebitBaseAmount.String(), markup.StringFixed(2))
	if t.DebitCacheDiscount != nil {
		pct := t.DebitCacheDiscount.Div(t.DebitBaseAmount.Add(*t.DebitCacheDiscount)).Mul(decimal.NewFromInt(100))
		line += fmt.Sprintf(", cache discount %s (%s%%)", t.DebitCacheDiscount.String(), pct.StringFixed(1))
	}
	return line
}

type summary struct {
	BillingCalls    int               `json:"billingCalls"`
	RowsRendered    int               `json:"rowsRendered"`
	Balance         string            `json:"balance"`
	Scopes          map[string]int    `json:"scopes"`
	CreditTypes     []string          `json:"creditTypes"`
	ClampedPageSize int               `json:"clampedPageSize"`
	NumPagesMax     bool              `json:"numPagesMax"`
	ApiErrors       map[string]string `json:"apiErrors"`
	Streams         []streamResult    `json:"streams"`
	ErrorFrame      *StreamError      `json:"errorFrame"`
	Rendered        []string          `json:"rendered"`
}

type streamResult struct {
	Base         string `json:"base"`
	Model        string `json:"model"`
	GenerationId string `json:"generationId"`
	PromptTokens int    `json:"promptTokens"`
	Cached       int    `json:"cached"`
	Completion   int    `json:"completion"`
	ToolCall     string `json:"toolCall"`
}

func main() {
	key := mustEnv("KEY")
	out := summary{Scopes: map[string]int{}, ApiErrors: map[string]string{}}

	// The CLI's billing calls: each must answer 200 and decode into the CLI's type.
	billing := func(name, method, path string, req interface{}, into interface{}) {
		status, _, data := call(method, path, key, req, nil)
		if status != 200 {
			fail("%s: %d %s", name, status, data)
		}
		decode(name, data, into)
		out.BillingCalls++
	}
	var balance GetBalanceResponse
	billing("balance", "GET", "/billing/balance", nil, &balance)
	out.Balance = balance.Balance.String()
	seenTypes := map[string]bool{}
	for _, s := range scopes(mustEnv("PLAN_ID"), mustEnv("SESSION_ID")) {
		var sum CreditsSummaryResponse
		billing("summary "+s.name, "POST", "/billing/credits_summary", s.req, &sum)
		var log CreditsLogResponse
		billing("log "+s.name, "POST", "/billing/credits_transactions?size=100&page=1", s.req, &log)
		out.Scopes[s.name] = len(log.Transactions)
		for _, t := range log.Transactions {
			out.Rendered = append(out.Rendered, renderRow(t))
			out.RowsRendered++
			if t.CreditType != nil && !seenTypes[string(*t.CreditType)] {
				seenTypes[string(*t.CreditType)] = true
				out.CreditTypes = append(out.CreditTypes, string(*t.CreditType))
			}
		}
	}
	// A page size past the CLI's maximum is clamped, not refused.
	var big CreditsLogResponse
	billing("log size=1000", "POST", "/billing/credits_transactions?size=1000&page=1", CreditsLogRequest{}, &big)
	out.BillingCalls-- // not one of the CLI's 13
	out.ClampedPageSize = len(big.Transactions)
	out.NumPagesMax = big.NumPagesMax

	// The ApiError of a 402, a 403 and a 401, as the CLI reads it.
	chat := map[string]interface{}{
		"model":    "gpt-4.1-mini",
		"messages": []map[string]string{{"role": "user", "content": "hi"}},
	}
	expectApiError := func(name string, status int, headers http.Header, data []byte) ApiError {
		if headers.Get("Content-Type") != "application/json" {
			fail("%s: Content-Type %q, the CLI parses only application/json", name, headers.Get("Content-Type"))
		}
		var apiErr ApiError
		decode(name, data, &apiErr)
		if apiErr.Status != status {
			fail("%s: status %d in the body, %d on the wire", name, apiErr.Status, status)
		}
		out.ApiErrors[fmt.Sprint(status)] = apiErr.Type
		return apiErr
	}
	status, headers, data := call("POST", "/openai/v1/chat/completions", mustEnv("BROKE_KEY"), chat, nil)
	if status != 402 {
		fail("broke org: %d %s", status, data)
	}
	refused := expectApiError("402", status, headers, data)
	switch refused.Type {
	case "cloud_insufficient_credits", "cloud_monthly_max_reached", "cloud_subscription_paused", "cloud_subscription_overdue":
		_ = refused.BillingError.IsTrial // read without a nil check, as the CLI does
	default:
		fail("402 of type %s", refused.Type)
	}
	status, headers, data = call("POST", "/openai/v1/chat/completions", mustEnv("BYO_TRIAL_KEY"), chat,
		map[string]string{"x-planto-provider-key": "sk-user-own", "x-planto-plan-id": "one-plan-too-many"})
	if status != 403 {
		fail("trial org: %d %s", status, data)
	}
	trial := expectApiError("403", status, headers, data)
	if trial.Type != "trial_plans_exceeded" || trial.TrialPlansExceededError.MaxPlans < 1 {
		fail("403: %s", data)
	}
	status, headers, data = call("GET", "/billing/balance", "not-a-key", nil, nil)
	if status != 401 {
		fail("bad key: %d %s", status, data)
	}
	expectApiError("401", status, headers, data)

	// The server's model calls: streamed, closed at the first chunk with usage.
	out.Streams = append(out.Streams,
		stream(key, "/openai/v1", "gpt-4.1", map[string]interface{}{"reasoning_effort": "low",
			"prediction": map[string]string{"type": "content", "content": "x"}}),
		stream(key, "/openrouter/v1", "anthropic/claude-sonnet-4:nitro", map[string]interface{}{
			"reasoning": map[string]interface{}{"effort": "low", "max_tokens": 1000, "exclude": true}}),
	)
	out.ErrorFrame = errorFrame(key)

	encoded, err := json.Marshal(out)
	if err != nil {
		fail("summary: %v", err)
	}
	fmt.Println(string(encoded))
}

func streamRequest(key, base, model string, extra map[string]interface{}, mock map[string]interface{}) *http.Response {
	body := map[string]interface{}{
		"model":          model,
		"stream":         true,
		"stream_options": map[string]bool{"include_usage": true},
		"messages": []map[string]interface{}{{
			"role": "user",
			"content": []map[string]interface{}{
				{"type": "text", "text": "Write the plan.", "cache_control": map[string]string{"type": "ephemeral"}},
			},
		}},
		"tools": []map[string]interface{}{{
			"type": "function",
			"function": map[string]interface{}{
				"name":       "writePlan",
				"parameters": map[string]interface{}{"type": "object", "properties": map[string]interface{}{"title": map[string]string{"type": "string"}}, "required": []string{"title"}},
			},
		}},
		"mock": mock,
	}
	for k, v := range extra {
		body[k] = v
	}
	encoded, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", gateway+base+"/chat/completions", bytes.NewReader(encoded))
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	if strings.HasPrefix(base, "/openrouter") {
		req.Header.Set("HTTP-Referer", "https://plandex.ai")
		req.Header.Set("X-Title", "Planto")
		req.Header.Set("X-OR-Prefer", "ttft,throughput")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		fail("stream %s: %v", model, err)
	}
	if res.StatusCode != 200 {
		data, _ := io.ReadAll(res.Body)
		fail("stream %s: %d %s", model, res.StatusCode, data)
	}
	return res
}

// stream reads a call as the server does and closes the connection at the first usage chunk.
func stream(key, base, model string, extra map[string]interface{}) streamResult {
	res := streamRequest(key, base, model, extra, map[string]interface{}{
		"chunks": 3, "doneDelayMs": 300,
		"usage": map[string]interface{}{"prompt_tokens": 900, "cached_tokens": 100, "completion_tokens": 30, "cost": 0.0009},
	})
	defer res.Body.Close()
	result := streamResult{Base: base, Model: model}
	scanner := bufio.NewScanner(res.Body)
	scanner.Buffer(make([]byte, 1024*1024), 1024*1024)
	for scanner.Scan() {
		line := strings.TrimSpace(scanner.Text())
		if !strings.HasPrefix(line, "data:") {
			continue
		}
		payload := strings.TrimSpace(strings.TrimPrefix(line, "data:"))
		if payload == "[DONE]" {
			fail("stream %s: [DONE] before the usage chunk", model)
		}
		var chunk StreamChunk
		if err := json.Unmarshal([]byte(payload), &chunk); err != nil {
			continue // the server drops lines it cannot decode
		}
		if chunk.Error != nil {
			fail("stream %s: error frame %+v", model, *chunk.Error)
		}
		if result.GenerationId == "" {
			result.GenerationId = chunk.Id
		}
		for _, choice := range chunk.Choices {
			for _, tc := range choice.Delta.ToolCalls {
				if tc.Function.Name != "" {
					result.ToolCall = tc.Function.Name
				}
			}
		}
		if chunk.Usage != nil {
			result.PromptTokens = chunk.Usage.PromptTokens
			result.Completion = chunk.Usage.CompletionTokens
			if chunk.Usage.PromptTokensDetails != nil {
				result.Cached = chunk.Usage.PromptTokensDetails.CachedTokens
			}
			return result // closes the connection without reading [DONE]
		}
	}
	fail("stream %s: ended without a usage chunk (%v)", model, scanner.Err())
	return result
}

// errorFrame reads a stream the upstream cuts mid-way: the gateway's last frame must decode with
// an int code, or the server would see only EOF.
func errorFrame(key string) *StreamError {
	res := streamRequest(key, "/openai/v1", "gpt-4.1-mini", nil, map[string]interface{}{"chunks": 10, "abortAfterChunks": 2, "delayMs": 20})
	defer res.Body.Close()
	scanner := bufio.NewScanner(res.Body)
	for scanner.Scan() {
		line := strings.TrimSpace(scanner.Text())
		if !strings.HasPrefix(line, "data:") {
			continue
		}
		var chunk StreamChunk
		if err := json.Unmarshal([]byte(strings.TrimSpace(strings.TrimPrefix(line, "data:"))), &chunk); err != nil {
			continue
		}
		if chunk.Error != nil {
			return chunk.Error
		}
	}
	fail("no error frame the server could decode")
	return nil
}
