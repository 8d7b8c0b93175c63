CREATE TABLE "api_keys" (
	"id" text PRIMARY KEY NOT NULL,
	"org_id" text NOT NULL,
	"key_hash" text NOT NULL,
	"prefix" text NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"revoked_at" timestamp with time zone,
	CONSTRAINT "api_keys_key_hash_unique" UNIQUE("key_hash")
);
--> statement-breakpoint
CREATE TABLE "credit_transactions" (
	"id" text PRIMARY KEY NOT NULL,
	"org_id" text NOT NULL,
	"transaction_type" text NOT NULL,
	"amount" bigint NOT NULL,
	"start_balance" bigint NOT NULL,
	"end_balance" bigint NOT NULL,
	"created_at" timestamp with time zone NOT NULL,
	"user_id" text,
	"credit_type" text,
	"credit_is_auto_rebuy" boolean,
	"credit_auto_rebuy_min_threshold" bigint,
	"credit_auto_rebuy_to_balance" bigint,
	"debit_input_tokens" integer,
	"debit_cached_tokens" integer,
	"debit_output_tokens" integer,
	"debit_model_input_price_per_token" text,
	"debit_model_output_price_per_token" text,
	"debit_base_amount" bigint,
	"debit_surcharge" bigint,
	"debit_cache_discount" bigint,
	"debit_model_provider" text,
	"debit_model_name" text,
	"debit_model_pack_name" text,
	"debit_model_role" text,
	"debit_purpose" text,
	"debit_plan_id" text,
	"debit_plan_name" text,
	"debit_session_id" text
);
--> statement-breakpoint
CREATE TABLE "orgs" (
	"id" text PRIMARY KEY NOT NULL,
	"name" text NOT NULL,
	"billing_mode" text NOT NULL,
	"is_trial" boolean NOT NULL,
	"subscription_status" text DEFAULT 'active' NOT NULL,
	"auto_rebuy_enabled" boolean DEFAULT false NOT NULL,
	"auto_rebuy_min_threshold" bigint,
	"auto_rebuy_to_balance" bigint,
	"notify_threshold" bigint,
	"max_threshold_per_month" bigint,
	"billing_cycle_started_at" timestamp with time zone DEFAULT now() NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"deleted_at" timestamp with time zone
);
--> statement-breakpoint
CREATE TABLE "usage_records" (
	"id" text PRIMARY KEY NOT NULL,
	"org_id" text NOT NULL,
	"key_id" text NOT NULL,
	"route" text NOT NULL,
	"provider" text NOT NULL,
	"model" text NOT NULL,
	"byo" boolean NOT NULL,
	"input_tokens" integer NOT NULL,
	"cached_tokens" integer NOT NULL,
	"cache_write_tokens" integer NOT NULL,
	"output_tokens" integer NOT NULL,
	"reasoning_tokens" integer NOT NULL,
	"charged" bigint NOT NULL,
	"list_price" bigint NOT NULL,
	"base" bigint NOT NULL,
	"surcharge" bigint NOT NULL,
	"cache_discount" bigint NOT NULL,
	"plan_id" text,
	"plan_name" text,
	"session_id" text,
	"user_id" text,
	"purpose" text,
	"model_role" text,
	"model_pack" text,
	"started_at" timestamp with time zone NOT NULL,
	"first_token_at" timestamp with time zone,
	"ended_at" timestamp with time zone NOT NULL,
	"stopped_early" boolean NOT NULL,
	"client_cancelled" boolean NOT NULL,
	"upstream_error" boolean NOT NULL,
	"no_reported_usage" boolean NOT NULL
);
--> statement-breakpoint
ALTER TABLE "api_keys" ADD CONSTRAINT "api_keys_org_id_orgs_id_fk" FOREIGN KEY ("org_id") REFERENCES "public"."orgs"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "api_keys_org_idx" ON "api_keys" USING btree ("org_id");--> statement-breakpoint
CREATE INDEX "credit_transactions_org_created_idx" ON "credit_transactions" USING btree ("org_id","created_at");--> statement-breakpoint
CREATE INDEX "credit_transactions_org_plan_idx" ON "credit_transactions" USING btree ("org_id","debit_plan_id");--> statement-breakpoint
CREATE INDEX "credit_transactions_org_session_idx" ON "credit_transactions" USING btree ("org_id","debit_session_id");--> statement-breakpoint
CREATE INDEX "usage_records_org_started_idx" ON "usage_records" USING btree ("org_id","started_at");