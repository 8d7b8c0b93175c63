export { apiKeys } from "./api-keys.ts";
export { creditOutbox } from "./credit-outbox.ts";
export { creditTransactions } from "./credit-transactions.ts";
export { deadLetters } from "./dead-letters.ts";
export { notifications } from "./notifications.ts";
export { orgs } from "./orgs.ts";
export { usageRecords } from "./usage-records.ts";
