#!/usr/bin/env node
// The project's CLI (`usage`, …), run from its TypeScript source through tsx.
import { register } from "tsx/esm/api";

register();
await import("../src/cli/main.ts");
