// Inlet API explorer: GraphiQL over POST /graphql with the console session (cookie) and its
// CSRF token, given the schema up front (its introspection query nests past the API's depth
// limit). Every request the explorer sends is an ordinary API request, limits included.
'use strict';

async function start() {
  const session = await (await fetch('/auth/session', { credentials: 'same-origin' })).json();
  if (!session.authenticated) { location.assign('/console'); return; }
  const schemaResponse = await fetch('/graphql/explorer/schema.json', { credentials: 'same-origin' });
  if (!schemaResponse.ok) throw new Error(`schema: HTTP ${schemaResponse.status}`);
  const schema = await schemaResponse.json();
  const fetcher = GraphiQL.createFetcher({ url: '/graphql', headers: { 'x-csrf-token': session.csrfToken } });
  const root = ReactDOM.createRoot(document.getElementById('graphiql'));
  root.render(React.createElement(GraphiQL, {
    fetcher,
    schema,
    defaultQuery: '# Signed in as ' + session.actor + ' (' + session.role + ').\n{\n  counts { events pending delivered deadLettered }\n}\n',
    defaultEditorToolsVisibility: false,
  }));
}

start().catch((error) => {
  document.getElementById('graphiql').textContent = `The explorer could not start: ${error.message}`;
});
