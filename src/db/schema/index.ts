export { apiKeys } from "./api-keys.ts";
export { creditTransactions } from "./credit-transactions.ts";
export { orgs } from "./orgs.ts";
export { usageRecords } from "./usage-records.ts";
