/** An error response's body: OpenAI's envelope and Planto's, side by side. */
export interface ErrorBody {
  error: { message: string; type: string; code: string; param: string | null };
  type: string;
  status: number;
  msg: string;
  [k: string]: unknown;
}
