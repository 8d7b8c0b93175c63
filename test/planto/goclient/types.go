package main

// The wire types of the Planto CLI and server, written for this test from ../shared/PLANTO-WIRE.md:
// the same json tags and Go types (decimal.Decimal for money, pointers for the optional debit
// fields, bool numPagesMax, time.Time), so encoding/json fails here exactly where it fails there.

import (
	"time"

	"github.com/shopspring/decimal"
)

// CreditsLogRequest has no omitempty: Go sends every field, empty ones as "", null and false.
type CreditsLogRequest struct {
	TransactionType string     `json:"transactionType"`
	PlanId          string     `json:"planId"`
	SessionId       string     `json:"sessionId"`
	DayStart        *time.Time `json:"dayStart"`
	Month           bool       `json:"month"`
}

type GetBalanceResponse struct {
	Balance decimal.Decimal `json:"balance"`
}

type CreditsSummaryResponse struct {
	Balance       decimal.Decimal            `json:"balance"`
	TotalSpend    decimal.Decimal            `json:"totalSpend"`
	CacheSavings  decimal.Decimal            `json:"cacheSavings"`
	MonthStart    time.Time                  `json:"monthStart"`
	ByPlanId      map[string]decimal.Decimal `json:"byPlanId"`
	ByModelName   map[string]decimal.Decimal `json:"byModelName"`
	ByPurpose     map[string]decimal.Decimal `json:"byPurpose"`
	PlanNamesById map[string]string          `json:"planNamesById"`
}

type CreditsLogResponse struct {
	Transactions  []*CreditsTransaction `json:"transactions"`
	NumPages      int                   `json:"numPages"`
	NumPagesMax   bool                  `json:"numPagesMax"`
	MonthStart    time.Time             `json:"monthStart"`
	PlanNamesById map[string]string     `json:"planNamesById"`
}

type CreditType string

type ModelProvider string

type CreditsTransaction struct {
	Id              string          `json:"id"`
	OrgId           string          `json:"orgId"`
	OrgName         string          `json:"orgName"`
	UserId          *string         `json:"userId,omitempty"`
	UserEmail       *string         `json:"userEmail,omitempty"`
	UserName        *string         `json:"userName,omitempty"`
	TransactionType string          `json:"transactionType"`
	Amount          decimal.Decimal `json:"amount"`
	StartBalance    decimal.Decimal `json:"startBalance"`
	EndBalance      decimal.Decimal `json:"endBalance"`
	CreatedAt       time.Time       `json:"createdAt"`

	CreditType                  *CreditType      `json:"creditType,omitempty"`
	CreditIsAutoRebuy           bool             `json:"creditIsAutoRebuy"`
	CreditAutoRebuyMinThreshold *decimal.Decimal `json:"creditAutoRebuyMinThreshold,omitempty"`
	CreditAutoRebuyToBalance    *decimal.Decimal `json:"creditAutoRebuyToBalance,omitempty"`

	DebitInputTokens              *int             `json:"debitInputTokens,omitempty"`
	DebitOutputTokens             *int             `json:"debitOutputTokens,omitempty"`
	DebitModelInputPricePerToken  *decimal.Decimal `json:"debitModelInputPricePerToken,omitempty"`
	DebitModelOutputPricePerToken *decimal.Decimal `json:"debitModelOutputPricePerToken,omitempty"`
	DebitModelProvider            *ModelProvider   `json:"debitModelProvider,omitempty"`
	DebitModelName                *string          `json:"debitModelName,omitempty"`
	DebitModelPackName            *string          `json:"debitModelPackName,omitempty"`
	DebitModelRole                *string          `json:"debitModelRole,omitempty"`
	DebitPurpose                  *string          `json:"debitPurpose,omitempty"`
	DebitPlanId                   *string          `json:"debitPlanId,omitempty"`
	DebitPlanName                 *string          `json:"debitPlanName,omitempty"`
	DebitId                       *string          `json:"debitId,omitempty"`
	DebitBaseAmount               *decimal.Decimal `json:"debitBaseAmount,omitempty"`
	DebitSurcharge                *decimal.Decimal `json:"debitSurcharge,omitempty"`
	DebitCacheDiscount            *decimal.Decimal `json:"debitCacheDiscount,omitempty"`
	DebitSessionId                *string          `json:"debitSessionId,omitempty"`
}

type BillingError struct {
	HasBillingPermission bool `json:"hasBillingPermission"`
	IsTrial              bool `json:"isTrial"`
}

type TrialPlansExceededError struct {
	MaxPlans int `json:"maxPlans"`
}

type TrialMessagesExceededError struct {
	MaxMessages int `json:"maxMessages"`
}

// ApiError is what the CLI decodes from an error body whose Content-Type is exactly application/json.
type ApiError struct {
	Type                       string                      `json:"type"`
	Status                     int                         `json:"status"`
	Msg                        string                      `json:"msg"`
	TrialPlansExceededError    *TrialPlansExceededError    `json:"trialPlansExceededError,omitempty"`
	TrialMessagesExceededError *TrialMessagesExceededError `json:"trialMessagesExceededError,omitempty"`
	BillingError               *BillingError               `json:"billingError,omitempty"`
}

// The server's view of a stream: each data line decodes into StreamChunk or is dropped.

type StreamUsage struct {
	PromptTokens        int `json:"prompt_tokens"`
	CompletionTokens    int `json:"completion_tokens"`
	PromptTokensDetails *struct {
		CachedTokens int `json:"cached_tokens"`
	} `json:"prompt_tokens_details"`
}

type StreamError struct {
	Code     int                    `json:"code"`
	Message  string                 `json:"message"`
	Metadata map[string]interface{} `json:"metadata"`
}

type StreamChunk struct {
	Id      string `json:"id"`
	Choices []struct {
		Delta struct {
			Content   string `json:"content"`
			ToolCalls []struct {
				Function struct {
					Name      string `json:"name"`
					Arguments string `json:"arguments"`
				} `json:"function"`
			} `json:"tool_calls"`
		} `json:"delta"`
		FinishReason *string `json:"finish_reason"`
	} `json:"choices"`
	Usage *StreamUsage `json:"usage"`
	Error *StreamError `json:"error"`
}
