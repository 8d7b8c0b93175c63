// Placeholder until the harness lands: starts nothing.
export default async function setup(): Promise<void> {}
