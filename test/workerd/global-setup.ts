import type { TestProject } from "vitest/node";
import { openDatabase } from "../../src/db/client.ts";
import { startMockUpstream } from "../../tools/mock-upstream/mock-upstream.ts";
import { startPostgres } from "../../tools/servers/postgres.ts";

/**
 * What the Worker reaches from inside workerd: a real Postgres (over TCP, the way Hyperdrive's local
 * connection string is reached) with the schema migrated as `npm run db:migrate` does before a
 * deploy, and the mock upstream speaking the providers' wire format.
 */
export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const [pg, mock] = await Promise.all([startPostgres(), startMockUpstream()]);
  const url = await pg.createDatabase("workerd");
  const database = await openDatabase({ databaseUrl: url, dataDir: "" });
  await database.migrate();
  await database.close();
  project.provide("workerdDatabaseUrl", url);
  project.provide("workerdOpenAiUrl", mock.baseUrls.openai);
  return async () => {
    await mock.close();
    await pg.destroy();
  };
}

declare module "vitest" {
  export interface ProvidedContext {
    workerdDatabaseUrl: string;
    workerdOpenAiUrl: string;
  }
}
