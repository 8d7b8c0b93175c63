export { apiKeys } from "./api-keys.ts";
export { creditTransactions } from "./credit-transactions.ts";
export { notifications } from "./notifications.ts";
export { orgs } from "./orgs.ts";
export { usageRecords } from "./usage-records.ts";
